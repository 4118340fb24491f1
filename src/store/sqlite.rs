//! The embedded backend: one SQLite file, WAL mode, sqlx runtime queries.
//!
//! Timestamps are stored as fixed-width UTC text (see [`ts`]) written only by this
//! module, so SQL can compare them as text. Every write that must be atomic is a single
//! statement, or a transaction whose first statement writes, so SQLite takes the write
//! lock up front and the busy timeout (rather than an immediate `SQLITE_BUSY`) applies.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use uuid::Uuid;

use super::{
    ACQUIRE_TIMEOUT, AttemptClaim, FailedLogin, NewUser, PasskeyUse, SQLITE_BUSY_TIMEOUT,
    StoreError, StoredPasskey, TokenKind, UNKNOWN_ATTEMPTS_RETENTION, USER_CHANGE_RETENTION,
    USER_CHANGE_WINDOW, User, UserChange, UserChangeEvent, UserStore, count_from_db,
    is_foreign_key_violation, is_unique_violation, lock_deadline, map_migrate, now, passkeys,
};
use crate::domain::{Email, UserId};

/// The SQLite schema, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// [`UserStore`] on a SQLite file.
pub(super) struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating when missing) the database and applies migrations.
    pub(super) async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let pool = open_pool(url, max_connections).await?;
        MIGRATOR.run(&pool).await.map_err(map_migrate)?;
        Ok(Self { pool })
    }

    /// Applies migrations and closes the database again.
    pub(super) async fn migrate_only(url: &str) -> Result<(), StoreError> {
        let pool = open_pool(url, 1).await?;
        let result = MIGRATOR.run(&pool).await.map_err(map_migrate);
        pool.close().await;
        result
    }

    async fn roles_of(&self, id: UserId) -> Result<Vec<String>, StoreError> {
        let mut roles: Vec<String> =
            sqlx::query_scalar("SELECT role FROM user_roles WHERE user_id = $1")
                .bind(id_text(id))
                .fetch_all(&self.pool)
                .await?;
        roles.sort();
        Ok(roles)
    }

    async fn with_roles(&self, row: Option<SqliteRow>) -> Result<Option<User>, StoreError> {
        match row {
            None => Ok(None),
            Some(row) => {
                let mut user = user_from_row(&row)?;
                user.roles = self.roles_of(user.id).await?;
                Ok(Some(user))
            }
        }
    }

    /// Runs an `UPDATE users … WHERE id = $1`, turning "no row" into `NotFound`.
    async fn update_user(&self, query: SqliteQuery<'_>) -> Result<(), StoreError> {
        let done = query.execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

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

fn id_text(id: UserId) -> String {
    id.to_string()
}

fn parse_user_id(text: &str) -> Result<UserId, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Other("a stored user id is not a UUID".into()))
}

fn user_from_row(row: &SqliteRow) -> Result<User, StoreError> {
    let id: String = row.try_get("id")?;
    Ok(User {
        id: parse_user_id(&id)?,
        email: Email::from_stored(row.try_get("email")?),
        password_hash: row.try_get("password_hash")?,
        first_name: row.try_get("first_name")?,
        last_name: row.try_get("last_name")?,
        is_verified: row.try_get("is_verified")?,
        is_active: row.try_get("is_active")?,
        two_factor_enabled: row.try_get("two_factor_enabled")?,
        two_factor_secret: row.try_get("two_factor_secret")?,
        failed_login_attempts: count_from_db(row.try_get("failed_login_attempts")?),
        locked_until: row.try_get("locked_until")?,
        last_login: row.try_get("last_login")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        roles: Vec::new(),
        language: row.try_get("language")?,
    })
}

fn passkey_from_row(row: &SqliteRow) -> Result<StoredPasskey, StoreError> {
    let id: String = row.try_get("id")?;
    let user_id: String = row.try_get("user_id")?;
    Ok(StoredPasskey {
        id: Uuid::parse_str(&id)
            .map_err(|_| StoreError::Other("a stored passkey id is not a UUID".into()))?,
        user_id: parse_user_id(&user_id)?,
        credential_id: row.try_get("credential_id")?,
        name: row.try_get("name")?,
        credential: row.try_get("credential")?,
        sign_count: passkeys::count_from_db(row.try_get("sign_count")?),
        backup_eligible: row.try_get("backup_eligible")?,
        backup_state: row.try_get("backup_state")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        let id = UserId::random();
        let at = now();
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, password_hash, first_name, last_name, \
             is_verified, is_active, two_factor_enabled, failed_login_attempts, \
             created_at, updated_at, language) \
             VALUES ($1, $2, $3, $4, $5, 0, 1, 0, 0, $6, $6, $7)",
        )
        .bind(id_text(id))
        .bind(new.email.as_str())
        .bind(&new.password_hash)
        .bind(&new.first_name)
        .bind(&new.last_name)
        .bind(ts(at))
        .bind(&new.language)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(User::created(id, new, at)),
            Err(e) if is_unique_violation(&e) => Err(StoreError::DuplicateEmail),
            Err(e) => Err(e.into()),
        }
    }

    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE email = $1"
        ))
        .bind(email.as_str())
        .fetch_optional(&self.pool)
        .await?;
        self.with_roles(row).await
    }

    async fn find_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id = $1"
        ))
        .bind(id_text(id))
        .fetch_optional(&self.pool)
        .await?;
        self.with_roles(row).await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        let role_rows: Vec<(String, String)> =
            sqlx::query_as("SELECT user_id, role FROM user_roles")
                .fetch_all(&self.pool)
                .await?;
        let mut roles: HashMap<String, Vec<String>> = HashMap::new();
        for (user_id, role) in role_rows {
            roles.entry(user_id).or_default().push(role);
        }
        rows.iter()
            .map(|row| {
                let mut user = user_from_row(row)?;
                if let Some(mut r) = roles.remove(&id_text(user.id)) {
                    r.sort();
                    user.roles = r;
                }
                Ok(user)
            })
            .collect()
    }

    async fn update_profile(
        &self,
        id: UserId,
        first_name: Option<String>,
        last_name: Option<String>,
    ) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(concat!(
            "UPDATE users SET first_name = COALESCE($2, first_name), \
             last_name = COALESCE($3, last_name), updated_at = $4 WHERE id = $1 RETURNING ",
            user_columns!()
        ))
        .bind(id_text(id))
        .bind(first_name)
        .bind(last_name)
        .bind(ts(now()))
        .fetch_optional(&self.pool)
        .await?;
        self.with_roles(row).await
    }

    async fn set_password_hash(&self, id: UserId, password_hash: &str) -> Result<(), StoreError> {
        self.update_user(
            sqlx::query("UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1")
                .bind(id_text(id))
                .bind(password_hash)
                .bind(ts(now())),
        )
        .await
    }

    async fn set_language(&self, id: UserId, language: &str) -> Result<(), StoreError> {
        self.update_user(
            sqlx::query("UPDATE users SET language = $2, updated_at = $3 WHERE id = $1")
                .bind(id_text(id))
                .bind(language)
                .bind(ts(now())),
        )
        .await
    }

    async fn mark_verified(&self, id: UserId) -> Result<(), StoreError> {
        self.update_user(
            sqlx::query("UPDATE users SET is_verified = 1, updated_at = $2 WHERE id = $1")
                .bind(id_text(id))
                .bind(ts(now())),
        )
        .await
    }

    async fn set_active(&self, id: UserId, active: bool) -> Result<(), StoreError> {
        self.update_user(
            sqlx::query("UPDATE users SET is_active = $2, updated_at = $3 WHERE id = $1")
                .bind(id_text(id))
                .bind(active)
                .bind(ts(now())),
        )
        .await
    }

    async fn record_failed_login(
        &self,
        id: UserId,
        max_attempts: u32,
        lock_for: Duration,
    ) -> Result<FailedLogin, StoreError> {
        let at = now();
        let deadline = lock_deadline(at, lock_for)?;
        // All right-hand sides see the row as it was before this statement, so the
        // CASE for locked_until repeats the new count's expression. A NULL
        // locked_until makes both comparisons NULL, i.e. false.
        let row = sqlx::query(
            "UPDATE users SET \
               failed_login_attempts = CASE WHEN locked_until <= $2 THEN 1 \
                                            ELSE failed_login_attempts + 1 END, \
               locked_until = CASE \
                 WHEN locked_until > $2 THEN locked_until \
                 WHEN (CASE WHEN locked_until <= $2 THEN 1 \
                            ELSE failed_login_attempts + 1 END) >= $3 THEN $4 \
                 ELSE NULL END, \
               updated_at = $2 \
             WHERE id = $1 \
             RETURNING failed_login_attempts, locked_until",
        )
        .bind(id_text(id))
        .bind(ts(at))
        .bind(i64::from(max_attempts.max(1)))
        .bind(ts(deadline))
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        let locked_until: Option<DateTime<Utc>> = row.try_get("locked_until")?;
        Ok(FailedLogin {
            attempts: count_from_db(row.try_get("failed_login_attempts")?),
            locked_until,
            newly_locked: locked_until == Some(deadline),
        })
    }

    async fn claim_login_attempt(
        &self,
        id: UserId,
        max_attempts: u32,
        lock_for: Duration,
    ) -> Result<AttemptClaim, StoreError> {
        let at = now();
        let deadline = lock_deadline(at, lock_for)?;
        // One statement: SQLite runs writers one at a time, so the WHERE clause and the
        // count are evaluated on the row as the previous claim left it. Right-hand sides
        // see the old row, hence the repeated count expression.
        let row = sqlx::query(
            "UPDATE users SET \
               failed_login_attempts = CASE WHEN locked_until <= $2 THEN 1 \
                                            ELSE failed_login_attempts + 1 END, \
               locked_until = CASE \
                 WHEN (CASE WHEN locked_until <= $2 THEN 1 \
                            ELSE failed_login_attempts + 1 END) >= $3 THEN $4 \
                 ELSE NULL END, \
               updated_at = $2 \
             WHERE id = $1 AND (locked_until IS NULL OR locked_until <= $2) \
             RETURNING failed_login_attempts",
        )
        .bind(id_text(id))
        .bind(ts(at))
        .bind(i64::from(max_attempts.max(1)))
        .bind(ts(deadline))
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            let attempt = count_from_db(row.try_get("failed_login_attempts")?);
            return Ok(AttemptClaim::Granted {
                attempt,
                last: attempt >= max_attempts.max(1),
            });
        }
        let locked_until: Option<Option<DateTime<Utc>>> =
            sqlx::query_scalar("SELECT locked_until FROM users WHERE id = $1")
                .bind(id_text(id))
                .fetch_optional(&self.pool)
                .await?;
        match locked_until {
            None => Err(StoreError::NotFound),
            // Unlocked between the two statements: refuse this one guess all the same.
            Some(until) => Ok(AttemptClaim::Locked {
                until: until.unwrap_or(at),
            }),
        }
    }

    async fn release_login_attempt(&self, id: UserId, max_attempts: u32) -> Result<(), StoreError> {
        self.update_user(
            sqlx::query(
                "UPDATE users SET \
                   failed_login_attempts = MAX(failed_login_attempts - 1, 0), \
                   locked_until = CASE WHEN failed_login_attempts - 1 < $2 THEN NULL \
                                       ELSE locked_until END, \
                   updated_at = $3 \
                 WHERE id = $1",
            )
            .bind(id_text(id))
            .bind(i64::from(max_attempts.max(1)))
            .bind(ts(now())),
        )
        .await
    }

    async fn claim_unknown_login_attempt(
        &self,
        email_hash: &str,
        max_attempts: u32,
        lock_for: Duration,
    ) -> Result<AttemptClaim, StoreError> {
        let at = now();
        let deadline = lock_deadline(at, lock_for)?;
        // The account rule of claim_login_attempt as an upsert: a first guess inserts
        // count 1; later ones update the row only while no lock is in force.
        let row = sqlx::query(
            "INSERT INTO unknown_login_attempts \
               (email_hash, failed_login_attempts, locked_until, updated_at) \
             VALUES ($1, 1, CASE WHEN 1 >= $3 THEN $4 ELSE NULL END, $2) \
             ON CONFLICT (email_hash) DO UPDATE SET \
               failed_login_attempts = CASE WHEN unknown_login_attempts.locked_until <= $2 THEN 1 \
                 ELSE unknown_login_attempts.failed_login_attempts + 1 END, \
               locked_until = CASE \
                 WHEN (CASE WHEN unknown_login_attempts.locked_until <= $2 THEN 1 \
                       ELSE unknown_login_attempts.failed_login_attempts + 1 END) >= $3 THEN $4 \
                 ELSE NULL END, \
               updated_at = $2 \
             WHERE unknown_login_attempts.locked_until IS NULL \
                OR unknown_login_attempts.locked_until <= $2 \
             RETURNING failed_login_attempts",
        )
        .bind(email_hash)
        .bind(ts(at))
        .bind(i64::from(max_attempts.max(1)))
        .bind(ts(deadline))
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            let attempt = count_from_db(row.try_get("failed_login_attempts")?);
            return Ok(AttemptClaim::Granted {
                attempt,
                last: attempt >= max_attempts.max(1),
            });
        }
        let until: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
            "SELECT locked_until FROM unknown_login_attempts WHERE email_hash = $1",
        )
        .bind(email_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(AttemptClaim::Locked {
            until: until.flatten().unwrap_or(at),
        })
    }

    async fn purge_unknown_login_attempts(&self) -> Result<u64, StoreError> {
        let at = now();
        let idle_since =
            at - TimeDelta::from_std(UNKNOWN_ATTEMPTS_RETENTION).unwrap_or(TimeDelta::days(1));
        let done = sqlx::query(
            "DELETE FROM unknown_login_attempts \
             WHERE updated_at < $1 AND (locked_until IS NULL OR locked_until <= $2)",
        )
        .bind(ts(idle_since))
        .bind(ts(at))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn record_successful_login(&self, id: UserId) -> Result<(), StoreError> {
        self.update_user(
            sqlx::query(
                "UPDATE users SET failed_login_attempts = 0, locked_until = NULL, \
                 last_login = $2, updated_at = $2 WHERE id = $1",
            )
            .bind(id_text(id))
            .bind(ts(now())),
        )
        .await
    }

    async fn unlock(&self, id: UserId) -> Result<(), StoreError> {
        self.update_user(
            sqlx::query(
                "UPDATE users SET failed_login_attempts = 0, locked_until = NULL, \
                 updated_at = $2 WHERE id = $1",
            )
            .bind(id_text(id))
            .bind(ts(now())),
        )
        .await
    }

    async fn grant_role(&self, id: UserId, role: &str) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO user_roles (user_id, role) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(id_text(id))
        .bind(role)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(done) => Ok(done.rows_affected() == 1),
            Err(e) if is_foreign_key_violation(&e) => Err(StoreError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    async fn revoke_role(&self, id: UserId, role: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND role = $2")
            .bind(id_text(id))
            .bind(role)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_two_factor(&self, id: UserId, secret: Option<Vec<u8>>) -> Result<(), StoreError> {
        let enabled = secret.is_some();
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE users SET two_factor_enabled = $2, two_factor_secret = $3, updated_at = $4 \
             WHERE id = $1",
        )
        .bind(id_text(id))
        .bind(enabled)
        .bind(secret)
        .bind(ts(now()))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        if !enabled {
            sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
                .bind(id_text(id))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn replace_recovery_codes(
        &self,
        id: UserId,
        hashes: &[String],
    ) -> Result<(), StoreError> {
        let at = ts(now());
        let mut tx = self.pool.begin().await?;
        // Writing the user row first both checks that the user exists and takes the
        // write lock before anything is read.
        let done = sqlx::query("UPDATE users SET updated_at = $2 WHERE id = $1")
            .bind(id_text(id))
            .bind(&at)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(id_text(id))
            .execute(&mut *tx)
            .await?;
        for hash in hashes {
            sqlx::query(
                "INSERT INTO recovery_codes (user_id, code_hash, used, created_at) \
                 VALUES ($1, $2, 0, $3) ON CONFLICT DO NOTHING",
            )
            .bind(id_text(id))
            .bind(hash)
            .bind(&at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn consume_recovery_code(&self, id: UserId, code_hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE recovery_codes SET used = 1 \
             WHERE user_id = $1 AND code_hash = $2 AND used = 0",
        )
        .bind(id_text(id))
        .bind(code_hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn create_token(
        &self,
        id: UserId,
        kind: TokenKind,
        token_hash: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO verification_tokens \
             (id, user_id, kind, token_hash, expires_at, used, created_at) \
             VALUES ($1, $2, $3, $4, $5, 0, $6)",
        )
        .bind(Uuid::new_v4().to_string())
        .bind(id_text(id))
        .bind(kind.as_str())
        .bind(token_hash)
        .bind(ts(expires_at))
        .bind(ts(now()))
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(e) if is_foreign_key_violation(&e) => Err(StoreError::NotFound),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Other(
                "a token with the same hash already exists".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    async fn consume_token(
        &self,
        kind: TokenKind,
        token_hash: &str,
    ) -> Result<Option<UserId>, StoreError> {
        let user_id: Option<String> = sqlx::query_scalar(
            "UPDATE verification_tokens SET used = 1 \
             WHERE token_hash = $1 AND kind = $2 AND used = 0 AND expires_at > $3 \
             RETURNING user_id",
        )
        .bind(token_hash)
        .bind(kind.as_str())
        .bind(ts(now()))
        .fetch_optional(&self.pool)
        .await?;
        user_id.as_deref().map(parse_user_id).transpose()
    }

    async fn invalidate_tokens(&self, id: UserId, kind: TokenKind) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE verification_tokens SET used = 1 \
             WHERE user_id = $1 AND kind = $2 AND used = 0",
        )
        .bind(id_text(id))
        .bind(kind.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn purge_expired_tokens(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM verification_tokens WHERE expires_at <= $1")
            .bind(ts(now()))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn record_user_change(&self, id: UserId, change: UserChange) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO user_changes (user_id, change) VALUES ($1, $2)")
            .bind(id_text(id))
            .bind(change.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn recent_user_changes(&self) -> Result<Vec<UserChangeEvent>, StoreError> {
        let rows: Vec<(i64, String, String, f64)> = sqlx::query_as(
            "SELECT id, user_id, change, changed_at FROM user_changes \
             WHERE changed_at > (julianday('now') - 2440587.5) * 86400.0 - $1 ORDER BY id",
        )
        .bind(USER_CHANGE_WINDOW.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, user_id, change, changed_at)| {
                Ok(UserChangeEvent {
                    id,
                    user_id: parse_user_id(&user_id)?,
                    change: UserChange::from_db(&change),
                    // Microseconds since the epoch fit an i64 for the next 290 000 years.
                    changed_at: DateTime::from_timestamp_micros((changed_at * 1e6) as i64)
                        .ok_or_else(|| StoreError::Other("a change time is out of range".into()))?,
                })
            })
            .collect()
    }

    async fn purge_user_changes(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM user_changes \
             WHERE changed_at < (julianday('now') - 2440587.5) * 86400.0 - $1",
        )
        .bind(USER_CHANGE_RETENTION.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn add_passkey(&self, passkey: &StoredPasskey) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO passkeys (id, user_id, credential_id, name, credential, sign_count, \
             backup_eligible, backup_state, created_at, last_used_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)",
        )
        .bind(passkey.id.to_string())
        .bind(id_text(passkey.user_id))
        .bind(&passkey.credential_id)
        .bind(&passkey.name)
        .bind(&passkey.credential)
        .bind(passkeys::count_to_db(passkey.sign_count))
        .bind(passkey.backup_eligible)
        .bind(passkey.backup_state)
        .bind(ts(passkey.created_at))
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) if is_foreign_key_violation(&e) => Err(StoreError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    async fn list_passkeys(&self, user: UserId) -> Result<Vec<StoredPasskey>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            passkey_columns!(),
            " FROM passkeys WHERE user_id = $1 ORDER BY created_at, id"
        ))
        .bind(id_text(user))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(passkey_from_row).collect()
    }

    async fn find_passkey(&self, credential_id: &str) -> Result<Option<StoredPasskey>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            passkey_columns!(),
            " FROM passkeys WHERE credential_id = $1"
        ))
        .bind(credential_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(passkey_from_row).transpose()
    }

    async fn rename_passkey(&self, user: UserId, id: Uuid, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE passkeys SET name = $3 WHERE id = $1 AND user_id = $2")
            .bind(id.to_string())
            .bind(id_text(user))
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn remove_passkey(&self, user: UserId, id: Uuid) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM passkeys WHERE id = $1 AND user_id = $2")
            .bind(id.to_string())
            .bind(id_text(user))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_passkey_use(&self, used: &PasskeyUse) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE passkeys SET sign_count = $3, backup_state = $4, credential = $5, \
             last_used_at = $6 WHERE id = $1 AND sign_count = $2",
        )
        .bind(used.id.to_string())
        .bind(passkeys::count_to_db(used.previous_sign_count))
        .bind(passkeys::count_to_db(used.sign_count))
        .bind(used.backup_state)
        .bind(&used.credential)
        .bind(ts(now()))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
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
