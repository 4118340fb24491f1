//! Storage that fails under the account API: a full disk, writes refused by the database
//! (injected with triggers, at a statement or at `COMMIT`), a write lock held elsewhere.
//! Every failure answers 503, never 500; nothing is left half-written; an answer of 201
//! means the account and its token are committed; the store heals once the fault is gone;
//! `/health` says degraded while the store cannot write.

use std::str::FromStr;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::support::app::*;
use crate::support::db::{Kind, TestDb};
use crate::support::disk::SmallDisk;

/// A gateway (in-process sessions) whose accounts live in `db`.
async fn gateway_on(db: &TestDb) -> TestApp {
    let url = db.url().to_owned();
    TestApp::spawn_with(Backend::Embedded, "", |c| {
        c.storage.url = url.parse().expect("a SQLite URL")
    })
    .await
}

async fn health(app: &TestApp) -> (StatusCode, Value) {
    let r = app
        .http
        .get(format!("{}/health", app.gw.admin_url()))
        .send()
        .await
        .expect("health reachable");
    (r.status(), r.json().await.expect("health JSON"))
}

async fn login_status(app: &TestApp, email: &str) -> StatusCode {
    app.post(
        "/api/auth/login",
        json!({"email": email, "password": PASSWORD}),
    )
    .await
    .status
}

/// Committed accounts with this address, and their committed tokens.
async fn committed(db: &TestDb, email: &str) -> (i64, i64) {
    let users = db
        .scalar(&format!(
            "SELECT count(*) FROM users WHERE email = '{email}'"
        ))
        .await;
    let tokens = db
        .scalar(&format!(
            "SELECT count(*) FROM verification_tokens t JOIN users u ON u.id = t.user_id \
             WHERE u.email = '{email}'"
        ))
        .await;
    (users, tokens)
}

/// Registers `email` and holds the answer to the database: 201 only with the account and
/// its token committed, 503 (`service_unavailable`) with neither, nothing else.
async fn register_and_check(app: &TestApp, db: &TestDb, email: &str) -> StatusCode {
    let r = app.register(email).await;
    let stored = committed(db, email).await;
    match r.status {
        StatusCode::CREATED => assert_eq!(stored, (1, 1), "{email}: 201 but not committed"),
        StatusCode::SERVICE_UNAVAILABLE => {
            assert_eq!(r.code(), "service_unavailable", "{email}: {}", r.body);
            assert_eq!(stored, (0, 0), "{email}: 503 but something was left");
        }
        other => panic!("{email}: {other} {}", r.body),
    }
    r.status
}

/// The SQLite database on a 3 MiB disk that fills up: registrations and logins while it is
/// full answer 503 (or succeed, committed, where SQLite still had room), never 500; once
/// space is freed every registration is committed, logins work, and `/health` is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_fails_writes_cleanly_and_the_store_heals() {
    let mount = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(mount.path().join("data"), "3m") else {
        return;
    };
    let db = TestDb::sqlite_in(disk.path());
    let app = gateway_on(&db).await;
    assert_eq!(
        register_and_check(&app, &db, "before@example.com").await,
        201
    );
    assert_eq!(login_status(&app, "before@example.com").await, 200);
    assert_eq!(health(&app).await.0, 200);

    disk.fill();
    let (status, body) = health(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["data_dir"]["status"], "down", "{body}");
    let mut refused = 0;
    for i in 0..10 {
        let status = register_and_check(&app, &db, &format!("full{i}@example.com")).await;
        refused += usize::from(status == 503);
        if i % 3 == 0 {
            let login = login_status(&app, "before@example.com").await;
            assert!(matches!(login.as_u16(), 200 | 503), "login: {login}");
        }
    }
    assert!(refused > 0, "the full disk refused no registration");

    disk.free();
    for i in 0..6 {
        let email = format!("after{i}@example.com");
        assert_eq!(register_and_check(&app, &db, &email).await, 201, "{email}");
    }
    for _ in 0..3 {
        assert_eq!(login_status(&app, "before@example.com").await, 200);
    }
    let (status, body) = health(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["storage"], "ok", "{body}");
}

/// A fault injected into the test's database: statements that install it, and those that
/// take it away again.
struct Fault {
    name: &'static str,
    install: &'static [&'static str],
    remove: &'static [&'static str],
}

const SQLITE_FAULTS: &[Fault] = &[
    Fault {
        name: "token insert refused (RAISE ABORT)",
        install: &["CREATE TRIGGER fault BEFORE INSERT ON verification_tokens \
                    BEGIN SELECT RAISE(ABORT, 'injected'); END"],
        remove: &["DROP TRIGGER fault"],
    },
    Fault {
        // SQLite ends the whole transaction itself, as it may on a full disk.
        name: "token insert refused (RAISE ROLLBACK)",
        install: &["CREATE TRIGGER fault BEFORE INSERT ON verification_tokens \
                    BEGIN SELECT RAISE(ROLLBACK, 'injected'); END"],
        remove: &["DROP TRIGGER fault"],
    },
    Fault {
        name: "user insert refused (RAISE FAIL)",
        install: &["CREATE TRIGGER fault BEFORE INSERT ON users \
                    BEGIN SELECT RAISE(FAIL, 'injected'); END"],
        remove: &["DROP TRIGGER fault"],
    },
    Fault {
        name: "user insert refused (RAISE ROLLBACK)",
        install: &["CREATE TRIGGER fault BEFORE INSERT ON users \
                    BEGIN SELECT RAISE(ROLLBACK, 'injected'); END"],
        remove: &["DROP TRIGGER fault"],
    },
    Fault {
        // Every statement succeeds; the deferred foreign key fails the COMMIT.
        name: "COMMIT refused (deferred foreign key)",
        install: &[
            "CREATE TABLE fault_parent (id INTEGER PRIMARY KEY)",
            "CREATE TABLE fault_child (parent INTEGER \
             REFERENCES fault_parent (id) DEFERRABLE INITIALLY DEFERRED)",
            "CREATE TRIGGER fault AFTER INSERT ON verification_tokens \
             BEGIN INSERT INTO fault_child VALUES (1); END",
        ],
        remove: &[
            "DROP TRIGGER fault",
            "DROP TABLE fault_child",
            "DROP TABLE fault_parent",
        ],
    },
];

const POSTGRES_FAULTS: &[Fault] = &[
    Fault {
        name: "token insert: disk_full (53100)",
        install: &[
            "CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = 'disk_full'; END $$",
            "CREATE TRIGGER fault BEFORE INSERT ON verification_tokens \
             FOR EACH ROW EXECUTE FUNCTION fault()",
        ],
        remove: &[
            "DROP TRIGGER fault ON verification_tokens",
            "DROP FUNCTION fault",
        ],
    },
    Fault {
        name: "user insert: disk_full (53100)",
        install: &[
            "CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = 'disk_full'; END $$",
            "CREATE TRIGGER fault BEFORE INSERT ON users \
             FOR EACH ROW EXECUTE FUNCTION fault()",
        ],
        remove: &["DROP TRIGGER fault ON users", "DROP FUNCTION fault"],
    },
    Fault {
        name: "token insert: a trigger's plain exception (P0001)",
        install: &[
            "CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'injected'; END $$",
            "CREATE TRIGGER fault BEFORE INSERT ON verification_tokens \
             FOR EACH ROW EXECUTE FUNCTION fault()",
        ],
        remove: &[
            "DROP TRIGGER fault ON verification_tokens",
            "DROP FUNCTION fault",
        ],
    },
    Fault {
        // A deferred constraint trigger runs at COMMIT.
        name: "COMMIT: disk_full (53100) from a deferred trigger",
        install: &[
            "CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = 'disk_full'; END $$",
            "CREATE CONSTRAINT TRIGGER fault AFTER INSERT ON verification_tokens \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fault()",
        ],
        remove: &[
            "DROP TRIGGER fault ON verification_tokens",
            "DROP FUNCTION fault",
        ],
    },
];

/// Each injected failure of a registration's writes answers 503 every time and leaves no
/// account and no token; afterwards (the fault taken away) registrations are committed
/// and an existing account logs in, on every connection of the pool.
#[tokio::test(flavor = "multi_thread")]
async fn injected_write_failures_answer_503_and_leave_nothing() {
    for (kind, faults) in [
        (Kind::Sqlite, SQLITE_FAULTS),
        (Kind::Postgres, POSTGRES_FAULTS),
    ] {
        let Some(db) = TestDb::of(kind).await else {
            eprintln!("skipped: PostgreSQL is not configured");
            continue;
        };
        let app = gateway_on(&db).await;
        assert_eq!(
            register_and_check(&app, &db, "known@example.com").await,
            201
        );
        for (n, fault) in faults.iter().enumerate() {
            for statement in fault.install {
                db.execute(statement).await.expect(fault.name);
            }
            for i in 0..4 {
                let email = format!("refused{n}-{i}@example.com");
                let status = register_and_check(&app, &db, &email).await;
                assert_eq!(status, 503, "{kind:?}, {}: {email}", fault.name);
            }
            for statement in fault.remove {
                db.execute(statement).await.expect(fault.name);
            }
            for i in 0..4 {
                let email = format!("accepted{n}-{i}@example.com");
                let status = register_and_check(&app, &db, &email).await;
                assert_eq!(status, 201, "{kind:?}, after {}: {email}", fault.name);
            }
            let login = login_status(&app, "known@example.com").await;
            assert_eq!(login, 200, "{kind:?}, after {}", fault.name);
        }
        assert_eq!(health(&app).await.0, 200, "{kind:?}");
    }
}

/// A SQLite write lock that another connection never lets go makes `/health` report the
/// store down (it answers reads, but would take no write); once it is let go, healthy.
#[tokio::test(flavor = "multi_thread")]
async fn health_reports_a_store_that_cannot_take_writes() {
    let db = TestDb::sqlite();
    let app = gateway_on(&db).await;
    let (status, body) = health(&app).await;
    assert_eq!(status, 200, "{body}");

    let mut holder = SqliteConnectOptions::from_str(db.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();
    let (status, body) = health(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["checks"]["storage"]["status"], "down", "{body}");
    assert_eq!(body["checks"]["data_dir"], "ok", "{body}");

    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    holder.close().await.unwrap();
    let (status, body) = health(&app).await;
    assert_eq!(status, 200, "{body}");
}
