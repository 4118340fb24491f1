//! The scale-out backend: PostgreSQL shared by every gateway instance, as a [`Dialect`]
//! of the shared [`SqlStore`](super::sql::SqlStore).
//!
//! Ids are `uuid` and timestamps `timestamptz`; the change feed's clock is
//! `clock_timestamp()`.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::Postgres;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgQueryResult};
use uuid::Uuid;

use super::sql::Dialect;
use super::{ACQUIRE_TIMEOUT, StoreError};

/// The PostgreSQL schema, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

impl Dialect for Postgres {
    type Id = Uuid;
    type Time = DateTime<Utc>;
    type ChangedAt = DateTime<Utc>;

    // lower() on both sides so the unique index on lower(email) serves the lookup.
    const FIND_BY_EMAIL: &'static str = concat!(
        "SELECT ",
        user_columns!(),
        " FROM users WHERE lower(email) = lower($1)"
    );
    const RECENT_USER_CHANGES: &'static str = "SELECT id, user_id, change, changed_at \
         FROM user_changes \
         WHERE changed_at > clock_timestamp() - make_interval(secs => $1) ORDER BY id";
    const PURGE_USER_CHANGES: &'static str = "DELETE FROM user_changes \
         WHERE changed_at < clock_timestamp() - make_interval(secs => $1)";

    const PURGE_AUDIT_EVENTS: &'static str = "DELETE FROM audit_events \
         WHERE occurred_at < clock_timestamp() - make_interval(secs => $1)";

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    async fn open_pool(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(format!("invalid PostgreSQL URL: {e}")))?
            .application_name("portcullis");
        Ok(PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?)
    }

    /// A round trip on a pooled connection. (A transaction left open on one connection does
    /// not stop the others here, and `Tx` closes such a connection anyway.)
    async fn ping(pool: &PgPool) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(pool).await?;
        Ok(())
    }

    fn time(t: DateTime<Utc>) -> DateTime<Utc> {
        t
    }

    fn changed_at(stored: DateTime<Utc>) -> Result<DateTime<Utc>, StoreError> {
        Ok(stored)
    }

    fn clock(t: DateTime<Utc>) -> DateTime<Utc> {
        t
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }
}
