//! Databases for tests: each test owns one, and nothing is shared between tests.
//!
//! - SQLite: a file in a fresh temporary directory (in a sub-directory that does not
//!   exist yet, so the store's directory creation is exercised too).
//! - PostgreSQL: when `PORTCULLIS_TEST_POSTGRES_URL` names a server (an admin URL such as
//!   `postgres://postgres@127.0.0.1:5432/postgres`), a new database
//!   `portcullis_test_<random>` is created for the test and dropped when it ends.
//!   Unset, the PostgreSQL variants are skipped, except under `CI=true`, where an unset
//!   or unreachable server fails the test.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};

/// The environment variable naming the PostgreSQL server for tests.
pub const POSTGRES_URL_VAR: &str = "PORTCULLIS_TEST_POSTGRES_URL";

/// Which database a [`TestDb`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// A database that exists for one test.
pub struct TestDb {
    kind: Kind,
    url: String,
    /// Keeps the SQLite directory alive for the test.
    _dir: Option<tempfile::TempDir>,
    /// For PostgreSQL: the admin URL and the database to drop at the end.
    postgres: Option<(String, String)>,
}

/// The PostgreSQL admin URL, or `None` to skip; panics under CI when it is missing.
pub fn postgres_admin_url() -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_owned()),
        _ if super::in_ci() => panic!(
            "{POSTGRES_URL_VAR} is not set but CI=true: the PostgreSQL variants must run in CI \
             (e.g. {POSTGRES_URL_VAR}=postgres://postgres@127.0.0.1:5432/postgres)"
        ),
        _ => None,
    }
}

impl TestDb {
    /// A fresh SQLite database file (not created yet: the store creates it).
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let path = dir.path().join("nested").join("portcullis.db");
        Self {
            kind: Kind::Sqlite,
            url: format!("sqlite://{}", path.display()),
            _dir: Some(dir),
            postgres: None,
        }
    }

    /// A SQLite database file (not created yet) in `dir`, which the caller keeps alive.
    pub fn sqlite_in(dir: &std::path::Path) -> Self {
        Self {
            kind: Kind::Sqlite,
            url: format!("sqlite://{}", dir.join("portcullis.db").display()),
            _dir: None,
            postgres: None,
        }
    }

    /// A fresh, empty PostgreSQL database, or `None` when PostgreSQL tests are off.
    pub async fn postgres() -> Option<Self> {
        let admin_url = postgres_admin_url()?;
        let name = format!("portcullis_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!(
                "cannot reach PostgreSQL at {} ({POSTGRES_URL_VAR}): {e}",
                redact(&admin_url)
            )
        });
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let _ = admin.close().await;

        let mut url = url::Url::parse(&admin_url).expect("PostgreSQL URL parses");
        url.set_path(&format!("/{name}"));
        Some(Self {
            kind: Kind::Postgres,
            url: url.to_string(),
            _dir: None,
            postgres: Some((admin_url, name)),
        })
    }

    /// Either kind, by name; `None` only for PostgreSQL when it is off.
    pub async fn of(kind: Kind) -> Option<Self> {
        match kind {
            Kind::Sqlite => Some(Self::sqlite()),
            Kind::Postgres => Self::postgres().await,
        }
    }

    /// The storage URL to hand to the code under test.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Which database this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Runs one statement on a connection of its own (for checks below the store's API);
    /// returns the affected row count.
    pub async fn execute(&self, sql: &str) -> Result<u64, sqlx::Error> {
        let sql = AssertSqlSafe(sql.to_owned());
        match self.kind {
            Kind::Sqlite => {
                let mut conn = SqliteConnectOptions::from_str(&self.url)?
                    .foreign_keys(true)
                    .connect()
                    .await?;
                let done = sqlx::query(sql).execute(&mut conn).await?;
                let _ = conn.close().await;
                Ok(done.rows_affected())
            }
            Kind::Postgres => {
                let mut conn = PgConnectOptions::from_str(&self.url)?.connect().await?;
                let done = sqlx::query(sql).execute(&mut conn).await?;
                let _ = conn.close().await;
                Ok(done.rows_affected())
            }
        }
    }

    /// `SELECT count(*) FROM <table>` on a connection of its own.
    pub async fn count_rows(&self, table: &str) -> i64 {
        self.scalar(&format!("SELECT count(*) FROM {table}")).await
    }

    /// The one integer a query answers, read on a connection of its own (so only what is
    /// committed).
    pub async fn scalar(&self, sql: &str) -> i64 {
        let sql = AssertSqlSafe(sql.to_owned());
        match self.kind {
            Kind::Sqlite => {
                let mut conn = SqliteConnectOptions::from_str(&self.url)
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
            }
            Kind::Postgres => {
                let mut conn = PgConnectOptions::from_str(&self.url)
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else {
            return;
        };
        // Drop may run inside a runtime (which cannot block) or outside one: a thread
        // with its own small runtime works in both cases.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("build a runtime to drop the test database");
            rt.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await?;
                // FORCE ends connections a pool may still hold (PostgreSQL 13+).
                sqlx::query(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await?;
                admin.close().await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("warning: could not drop a test database: {e}");
        }
    }
}

fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}
