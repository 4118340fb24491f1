//! The embedded backend: one SQLite file in WAL mode, as a [`Dialect`] of the shared
//! [`SqlStore`](super::sql::SqlStore).
//!
//! Ids are stored as hyphenated text and timestamps as fixed-width UTC text (see [`ts`])
//! written only by the store, so SQL can compare them as text. The change feed's clock is
//! `julianday('now')`, in epoch seconds.

use std::path::Path;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteQueryResult, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Sqlite};
use uuid::fmt::Hyphenated;

use super::sql::Dialect;
use super::{ACQUIRE_TIMEOUT, SQLITE_BUSY_TIMEOUT, SQLITE_HEALTH_BUSY_TIMEOUT, StoreError};

/// The SQLite schema, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

impl Dialect for Sqlite {
    type Id = Hyphenated;
    type Time = String;
    type ChangedAt = f64;

    // Addresses are stored lower-cased (a CHECK keeps every writer to it), so the unique
    // index on the column itself serves an exact match.
    const FIND_BY_EMAIL: &'static str =
        concat!("SELECT ", user_columns!(), " FROM users WHERE email = $1");
    const RECENT_USER_CHANGES: &'static str = "SELECT id, user_id, change, changed_at \
         FROM user_changes \
         WHERE changed_at > (julianday('now') - 2440587.5) * 86400.0 - $1 ORDER BY id";
    const PURGE_USER_CHANGES: &'static str = "DELETE FROM user_changes \
         WHERE changed_at < (julianday('now') - 2440587.5) * 86400.0 - $1";

    const PURGE_AUDIT_EVENTS: &'static str = "DELETE FROM audit_events \
         WHERE occurred_at < (julianday('now') - 2440587.5) * 86400.0 - $1";

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    async fn open_pool(url: &str, max_connections: u32) -> Result<SqlitePool, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(format!("invalid SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable across application crashes in WAL mode; only a power loss
            // can drop the last commits, which is the usual trade for an embedded store.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(SQLITE_BUSY_TIMEOUT);

        let in_memory = is_in_memory(url);
        if !in_memory {
            create_parent_dir(options.get_filename())?;
        }

        let mut pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT);
        if in_memory {
            // An in-memory database lives only while a connection holds it open.
            pool = pool
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        Ok(pool.connect_with(options).await?)
    }

    /// Takes and gives back the write lock on a connection of its own (`BEGIN IMMEDIATE;
    /// ROLLBACK`, nothing written), waiting at most [`SQLITE_HEALTH_BUSY_TIMEOUT`]: a
    /// writer that never lets go (a transaction left open) fails it, as does a file that
    /// cannot be opened. A full disk is the data directory's check (`app.rs`).
    async fn ping(pool: &SqlitePool) -> Result<(), StoreError> {
        let options = (*pool.connect_options())
            .clone()
            .create_if_missing(false)
            .busy_timeout(SQLITE_HEALTH_BUSY_TIMEOUT);
        let mut conn = options.connect().await?;
        let probed = probe_write_lock(&mut conn).await;
        let _ = conn.close().await;
        probed
    }

    fn time(t: DateTime<Utc>) -> String {
        ts(t)
    }

    fn changed_at(seconds: f64) -> Result<DateTime<Utc>, StoreError> {
        // Microseconds since the epoch fit an i64 for the next 290 000 years.
        DateTime::from_timestamp_micros((seconds * 1e6) as i64)
            .ok_or_else(|| StoreError::Other("a change time is out of range".into()))
    }

    fn clock(t: DateTime<Utc>) -> f64 {
        t.timestamp_micros() as f64 / 1e6
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }
}

async fn probe_write_lock(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await?;
    Ok(())
}

fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

fn create_parent_dir(file: &Path) -> Result<(), StoreError> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot create the database directory {}: {e}",
                dir.display()
            ))
        }),
        _ => Ok(()),
    }
}

/// The one text form of a timestamp in this database: fixed width, so text order is time
/// order (`2025-01-01T00:00:00.000000Z`).
fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_sort_as_text() {
        let a = Utc.with_ymd_and_hms(2025, 1, 1, 9, 59, 59).unwrap();
        let b = a + chrono::TimeDelta::microseconds(1);
        let c = a + chrono::TimeDelta::seconds(1);
        assert_eq!(ts(a), "2025-01-01T09:59:59.000000Z");
        assert!(ts(a) < ts(b) && ts(b) < ts(c));
        assert_eq!(ts(a).len(), ts(b).len());
    }

    #[test]
    fn recognises_in_memory_urls() {
        assert!(is_in_memory("sqlite::memory:"));
        assert!(is_in_memory("sqlite://?mode=memory"));
        assert!(!is_in_memory("sqlite://data/portcullis.db"));
    }
}
