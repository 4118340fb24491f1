//! The audit trail's part of the `UserStore` conformance suite, on SQLite and, when
//! `PORTCULLIS_TEST_POSTGRES_URL` is set, PostgreSQL: events written, filtered and paged
//! newest first, kept after their subject is deleted, purged by age; and the operator's
//! commands writing it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use portcullis::domain::{Email, UserId};
use portcullis::store::admin::{AuditQuery, UserCommand, list_audit_events, run_user_command};
use portcullis::store::{
    Actor, AuditFilter, AuditKind, AuditOutcome, NewAuditEvent, NewUser, User, UserStore, connect,
};

use crate::support::db::{self, Kind, TestDb};

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
    audit_events_are_filtered_and_paged_newest_first,
    audit_events_outlive_their_subject,
    old_audit_events_are_purged,
    operator_commands_are_audited_and_listed,
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
            first_name: String::new(),
            last_name: String::new(),
            language: String::new(),
        })
        .await
        .unwrap()
}

fn about(kind: AuditKind, actor: Actor, user: &User) -> NewAuditEvent {
    NewAuditEvent::new(kind, actor, Some((user.id, &user.email)))
}

fn filter() -> AuditFilter {
    AuditFilter {
        limit: 100,
        ..AuditFilter::default()
    }
}

async fn audit_events_are_filtered_and_paged_newest_first(db: &TestDb) {
    let store = open(db).await;
    let (ada, bob) = (
        user(&*store, "ada@example.com").await,
        user(&*store, "bob@example.com").await,
    );
    let ip: IpAddr = "203.0.113.7".parse().unwrap();
    let failed = about(AuditKind::SignIn, Actor::Anonymous, &ada)
        .outcome(AuditOutcome::Failure)
        .from_ip(ip)
        .detail("wrong_password");
    for event in [
        failed.clone(),
        about(AuditKind::SignIn, Actor::User(ada.id), &ada).from_ip(ip),
        about(AuditKind::RoleGrant, Actor::Operator, &bob).detail("admin"),
        about(AuditKind::PasswordChange, Actor::User(ada.id), &ada),
    ] {
        store.record_audit_event(&event).await.unwrap();
    }

    let all = store.audit_events(&filter()).await.unwrap();
    assert_eq!(all.len(), 4);
    assert!(
        all.windows(2).all(|w| w[0].id > w[1].id),
        "newest first: {all:?}"
    );
    let first = &all[3];
    assert_eq!(first.kind, "sign_in");
    assert_eq!(first.actor, Actor::Anonymous);
    assert_eq!(first.subject, Some(ada.id));
    assert_eq!(first.subject_email.as_deref(), Some("ada@example.com"));
    assert_eq!(first.client_ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(first.outcome, AuditOutcome::Failure);
    assert_eq!(first.detail, "wrong_password");
    assert!(
        (Utc::now() - first.at).abs() < TimeDelta::minutes(5),
        "{:?}",
        first.at
    );
    assert_eq!(all[1].actor, Actor::Operator);

    let of_ada = store
        .audit_events(&AuditFilter {
            user: Some(ada.id),
            ..filter()
        })
        .await
        .unwrap();
    assert_eq!(of_ada.len(), 3);
    let sign_ins = store
        .audit_events(&AuditFilter {
            kind: Some(AuditKind::SignIn),
            ..filter()
        })
        .await
        .unwrap();
    assert_eq!(sign_ins.len(), 2);
    let by_email = store
        .audit_events(&AuditFilter {
            email: Some(bob.email.clone()),
            ..filter()
        })
        .await
        .unwrap();
    assert_eq!(by_email.len(), 1);
    assert_eq!(by_email[0].kind, "role_grant");

    // Pages of two: the second starts below the first's last id.
    let page = |before_id| AuditFilter {
        limit: 2,
        before_id,
        ..filter()
    };
    let one = store.audit_events(&page(None)).await.unwrap();
    let two = store.audit_events(&page(Some(one[1].id))).await.unwrap();
    let three = store.audit_events(&page(Some(two[1].id))).await.unwrap();
    let ids: Vec<i64> = one.iter().chain(&two).map(|e| e.id).collect();
    assert_eq!(ids, all.iter().map(|e| e.id).collect::<Vec<_>>());
    assert!(three.is_empty());

    let (past, future) = (
        Utc::now() - TimeDelta::hours(1),
        Utc::now() + TimeDelta::hours(1),
    );
    let since = |since| AuditFilter {
        since: Some(since),
        ..filter()
    };
    assert_eq!(store.audit_events(&since(past)).await.unwrap().len(), 4);
    assert!(store.audit_events(&since(future)).await.unwrap().is_empty());
    let until = AuditFilter {
        until: Some(past),
        ..filter()
    };
    assert!(store.audit_events(&until).await.unwrap().is_empty());
    let until = AuditFilter {
        until: Some(future),
        ..filter()
    };
    assert_eq!(store.audit_events(&until).await.unwrap().len(), 4);
}

async fn audit_events_outlive_their_subject(db: &TestDb) {
    let store = open(db).await;
    let ada = user(&*store, "ada@example.com").await;
    let event = about(AuditKind::Registration, Actor::User(ada.id), &ada);
    store.record_audit_event(&event).await.unwrap();
    assert!(store.delete_user(ada.id).await.unwrap());

    let kept = store
        .audit_events(&AuditFilter {
            user: Some(ada.id),
            ..filter()
        })
        .await
        .unwrap();
    assert_eq!(kept.len(), 1, "the trail stays after the account goes");
    assert_eq!(kept[0].subject_email.as_deref(), Some("ada@example.com"));
    // A subject that never existed is accepted too: the column is no foreign key.
    let ghost = NewAuditEvent::new(AuditKind::SignIn, Actor::Anonymous, None);
    let mut ghost = ghost.outcome(AuditOutcome::Failure);
    ghost.subject = Some(UserId::random());
    store.record_audit_event(&ghost).await.unwrap();
}

async fn old_audit_events_are_purged(db: &TestDb) {
    let store = open(db).await;
    let ada = user(&*store, "ada@example.com").await;
    for kind in [AuditKind::SignIn, AuditKind::LogoutAll] {
        let event = about(kind, Actor::User(ada.id), &ada);
        store.record_audit_event(&event).await.unwrap();
    }
    let backdate = match db.kind() {
        Kind::Sqlite => {
            "UPDATE audit_events SET occurred_at = occurred_at - 7200 WHERE kind = 'sign_in'"
        }
        Kind::Postgres => {
            "UPDATE audit_events SET occurred_at = occurred_at - interval '2 hours' \
             WHERE kind = 'sign_in'"
        }
    };
    assert_eq!(db.execute(backdate).await.unwrap(), 1);

    let hour = Duration::from_secs(3600);
    assert_eq!(store.purge_audit_events(hour * 3).await.unwrap(), 0);
    assert_eq!(store.purge_audit_events(hour).await.unwrap(), 1);
    let left = store.audit_events(&filter()).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].kind, "logout_all");
}

async fn operator_commands_are_audited_and_listed(db: &TestDb) {
    let store = open(db).await;
    let ada = user(&*store, "ada@example.com").await;
    let grant = UserCommand::GrantRole {
        email: "Ada@Example.com".into(),
        role: "admin".into(),
    };
    run_user_command(&*store, grant).await.unwrap();
    let delete = UserCommand::Delete {
        email: "ada@example.com".into(),
    };
    run_user_command(&*store, delete).await.unwrap();

    let events = store.audit_events(&filter()).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["user_delete", "role_grant"]);
    assert!(
        events
            .iter()
            .all(|e| e.actor == Actor::Operator && e.actor.user_id().is_none())
    );
    assert!(events.iter().all(|e| e.subject == Some(ada.id)));
    assert_eq!(events[1].detail, "admin");

    // The account is gone: `--user` falls back to the address.
    let query = AuditQuery {
        user: Some("ada@example.com".into()),
        kind: Some("role_grant".into()),
        since: Some((Utc::now() - TimeDelta::hours(1)).to_rfc3339()),
        limit: 10,
    };
    let table = list_audit_events(&*store, query).await.unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("KIND"),
        "{table}"
    );
    assert!(
        lines[1].contains("role_grant") && lines[1].contains("operator"),
        "{table}"
    );
    assert!(
        lines[1].contains("ada@example.com") && lines[1].contains("admin"),
        "{table}"
    );
    assert_eq!(lines[2], "1 event");

    let bad_kind = AuditQuery {
        kind: Some("nonsense".into()),
        limit: 10,
        ..AuditQuery::default()
    };
    let err = list_audit_events(&*store, bad_kind).await.unwrap_err();
    assert!(err.to_string().contains("sign_in"), "{err}");
    let bad_time = AuditQuery {
        since: Some("yesterday".into()),
        limit: 10,
        ..AuditQuery::default()
    };
    assert!(list_audit_events(&*store, bad_time).await.is_err());
}
