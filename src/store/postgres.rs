//! The scale-out backend: PostgreSQL shared by every gateway instance.
//!
//! Every write that must hold across instances (failure counting, token and recovery
//! code use) is one conditional `UPDATE … RETURNING`: PostgreSQL locks the row and
//! re-evaluates the statement against the latest version when two collide, so no
//! increment is lost and nothing is consumed twice, without explicit locking.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use uuid::Uuid;

use super::{
    ACQUIRE_TIMEOUT, AttemptClaim, FailedLogin, NewUser, PasskeyUse, StoreError, StoredPasskey,
    TokenKind, UNKNOWN_ATTEMPTS_RETENTION, USER_CHANGE_RETENTION, USER_CHANGE_WINDOW, User,
    UserChange, UserChangeEvent, UserStore, count_from_db, is_foreign_key_violation,
    is_unique_violation, lock_deadline, map_migrate, now, passkeys,
};
use crate::domain::{Email, UserId};

/// The PostgreSQL schema, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// [`UserStore`] on a PostgreSQL database.
pub(super) struct PgStore {
    pool: PgPool,
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

impl PgStore {
    /// Connects and applies migrations (PostgreSQL serialises concurrent migrators
    /// with an advisory lock, so several instances may start at once).
    pub(super) async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let pool = open_pool(url, max_connections).await?;
        MIGRATOR.run(&pool).await.map_err(map_migrate)?;
        Ok(Self { pool })
    }

    /// Applies migrations and disconnects.
    pub(super) async fn migrate_only(url: &str) -> Result<(), StoreError> {
        let pool = open_pool(url, 1).await?;
        let result = MIGRATOR.run(&pool).await.map_err(map_migrate);
        pool.close().await;
        result
    }

    async fn roles_of(&self, id: UserId) -> Result<Vec<String>, StoreError> {
        let mut roles: Vec<String> =
            sqlx::query_scalar("SELECT role FROM user_roles WHERE user_id = $1")
                .bind(id.as_uuid())
                .fetch_all(&self.pool)
                .await?;
        // Sorted here rather than by ORDER BY, whose order depends on the collation.
        roles.sort();
        Ok(roles)
    }

    async fn with_roles(&self, row: Option<PgRow>) -> Result<Option<User>, StoreError> {
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
    async fn update_user(&self, query: PgQuery<'_>) -> Result<(), StoreError> {
        let done = query.execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
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

fn user_from_row(row: &PgRow) -> Result<User, StoreError> {
    let id: Uuid = row.try_get("id")?;
    let attempts: i32 = row.try_get("failed_login_attempts")?;
    Ok(User {
        id: UserId::from_uuid(id),
        email: Email::from_stored(row.try_get("email")?),
        password_hash: row.try_get("password_hash")?,
        first_name: row.try_get("first_name")?,
        last_name: row.try_get("last_name")?,
        is_verified: row.try_get("is_verified")?,
        is_active: row.try_get("is_active")?,
        two_factor_enabled: row.try_get("two_factor_enabled")?,
        two_factor_secret: row.try_get("two_factor_secret")?,
        failed_login_attempts: count_from_db(i64::from(attempts)),
        locked_until: row.try_get("locked_until")?,
        last_login: row.try_get("last_login")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        roles: Vec::new(),
        language: row.try_get("language")?,
    })
}

fn passkey_from_row(row: &PgRow) -> Result<StoredPasskey, StoreError> {
    Ok(StoredPasskey {
        id: row.try_get("id")?,
        user_id: UserId::from_uuid(row.try_get("user_id")?),
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
impl UserStore for PgStore {
    async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        let id = UserId::random();
        let at = now();
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, password_hash, first_name, last_name, \
             is_verified, is_active, two_factor_enabled, failed_login_attempts, \
             created_at, updated_at, language) \
             VALUES ($1, $2, $3, $4, $5, FALSE, TRUE, FALSE, 0, $6, $6, $7)",
        )
        .bind(id.as_uuid())
        .bind(new.email.as_str())
        .bind(&new.password_hash)
        .bind(&new.first_name)
        .bind(&new.last_name)
        .bind(at)
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
        // lower() on both sides so the unique index on lower(email) serves the lookup.
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE lower(email) = lower($1)"
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
        .bind(id.as_uuid())
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
        let role_rows: Vec<(Uuid, String)> = sqlx::query_as("SELECT user_id, role FROM user_roles")
            .fetch_all(&self.pool)
            .await?;
        let mut roles: HashMap<Uuid, Vec<String>> = HashMap::new();
        for (user_id, role) in role_rows {
            roles.entry(user_id).or_default().push(role);
        }
        rows.iter()
            .map(|row| {
                let mut user = user_from_row(row)?;
                if let Some(mut r) = roles.remove(&user.id.as_uuid()) {
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
        .bind(id.as_uuid())
        .bind(first_name)
        .bind(last_name)
        .bind(now())
        .fetch_optional(&self.pool)
        .await?;
        self.with_roles(row).await
    }

    async fn set_password_hash(&self, id: UserId, password_hash: &str) -> Result<(), StoreError> {
        self.update_user(
            sqlx::query("UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1")
                .bind(id.as_uuid())
                .bind(password_hash)
                .bind(now()),
        )
        .await
    }

    async fn set_language(&self, id: UserId, language: &str) -> Result<(), StoreError> {
        self.update_user(
            sqlx::query("UPDATE users SET language = $2, updated_at = $3 WHERE id = $1")
                .bind(id.as_uuid())
                .bind(language)
                .bind(now()),
        )
        .await
    }

    async fn mark_verified(&self, id: UserId) -> Result<(), StoreError> {
        self.update_user(
            sqlx::query("UPDATE users SET is_verified = TRUE, updated_at = $2 WHERE id = $1")
                .bind(id.as_uuid())
                .bind(now()),
        )
        .await
    }

    async fn set_active(&self, id: UserId, active: bool) -> Result<(), StoreError> {
        self.update_user(
            sqlx::query("UPDATE users SET is_active = $2, updated_at = $3 WHERE id = $1")
                .bind(id.as_uuid())
                .bind(active)
                .bind(now()),
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
        // The same statement as the SQLite one: right-hand sides see the old row, and
        // a NULL locked_until makes both comparisons false.
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
        .bind(id.as_uuid())
        .bind(at)
        .bind(i32::try_from(max_attempts.max(1)).unwrap_or(i32::MAX))
        .bind(deadline)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        let attempts: i32 = row.try_get("failed_login_attempts")?;
        let locked_until: Option<DateTime<Utc>> = row.try_get("locked_until")?;
        Ok(FailedLogin {
            attempts: count_from_db(i64::from(attempts)),
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
        // Under READ COMMITTED a concurrent UPDATE of the same row waits for the first
        // one to commit and then re-checks the WHERE clause against the new row, so the
        // claims are counted one after another, across every instance.
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
        .bind(id.as_uuid())
        .bind(at)
        .bind(i32::try_from(max_attempts.max(1)).unwrap_or(i32::MAX))
        .bind(deadline)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            let attempt: i32 = row.try_get("failed_login_attempts")?;
            let attempt = count_from_db(i64::from(attempt));
            return Ok(AttemptClaim::Granted {
                attempt,
                last: attempt >= max_attempts.max(1),
            });
        }
        let locked_until: Option<Option<DateTime<Utc>>> =
            sqlx::query_scalar("SELECT locked_until FROM users WHERE id = $1")
                .bind(id.as_uuid())
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
                   failed_login_attempts = GREATEST(failed_login_attempts - 1, 0), \
                   locked_until = CASE WHEN failed_login_attempts - 1 < $2 THEN NULL \
                                       ELSE locked_until END, \
                   updated_at = $3 \
                 WHERE id = $1",
            )
            .bind(id.as_uuid())
            .bind(i32::try_from(max_attempts.max(1)).unwrap_or(i32::MAX))
            .bind(now()),
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
        // count 1; later ones update the row only while no lock is in force. Concurrent
        // upserts of one key wait for each other and re-check the WHERE clause.
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
        .bind(at)
        .bind(i32::try_from(max_attempts.max(1)).unwrap_or(i32::MAX))
        .bind(deadline)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            let attempt: i32 = row.try_get("failed_login_attempts")?;
            let attempt = count_from_db(i64::from(attempt));
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
        .bind(idle_since)
        .bind(at)
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
            .bind(id.as_uuid())
            .bind(now()),
        )
        .await
    }

    async fn unlock(&self, id: UserId) -> Result<(), StoreError> {
        self.update_user(
            sqlx::query(
                "UPDATE users SET failed_login_attempts = 0, locked_until = NULL, \
                 updated_at = $2 WHERE id = $1",
            )
            .bind(id.as_uuid())
            .bind(now()),
        )
        .await
    }

    async fn grant_role(&self, id: UserId, role: &str) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO user_roles (user_id, role) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(id.as_uuid())
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
            .bind(id.as_uuid())
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
        .bind(id.as_uuid())
        .bind(enabled)
        .bind(secret)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        if !enabled {
            sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
                .bind(id.as_uuid())
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
        let at = now();
        let mut tx = self.pool.begin().await?;
        // Updating the user row first checks that the user exists and, by locking it,
        // serialises two replacements for the same user.
        let done = sqlx::query("UPDATE users SET updated_at = $2 WHERE id = $1")
            .bind(id.as_uuid())
            .bind(at)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await?;
        // One statement for all codes: unnest the array of hashes.
        sqlx::query(
            "INSERT INTO recovery_codes (user_id, code_hash, used, created_at) \
             SELECT $1, h, FALSE, $3 FROM unnest($2::text[]) AS h \
             ON CONFLICT DO NOTHING",
        )
        .bind(id.as_uuid())
        .bind(hashes)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn consume_recovery_code(&self, id: UserId, code_hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE recovery_codes SET used = TRUE \
             WHERE user_id = $1 AND code_hash = $2 AND NOT used",
        )
        .bind(id.as_uuid())
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
             VALUES ($1, $2, $3, $4, $5, FALSE, $6)",
        )
        .bind(Uuid::new_v4())
        .bind(id.as_uuid())
        .bind(kind.as_str())
        .bind(token_hash)
        .bind(expires_at)
        .bind(now())
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
        let user_id: Option<Uuid> = sqlx::query_scalar(
            "UPDATE verification_tokens SET used = TRUE \
             WHERE token_hash = $1 AND kind = $2 AND NOT used AND expires_at > $3 \
             RETURNING user_id",
        )
        .bind(token_hash)
        .bind(kind.as_str())
        .bind(now())
        .fetch_optional(&self.pool)
        .await?;
        Ok(user_id.map(UserId::from_uuid))
    }

    async fn invalidate_tokens(&self, id: UserId, kind: TokenKind) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE verification_tokens SET used = TRUE \
             WHERE user_id = $1 AND kind = $2 AND NOT used",
        )
        .bind(id.as_uuid())
        .bind(kind.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn purge_expired_tokens(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM verification_tokens WHERE expires_at <= $1")
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn record_user_change(&self, id: UserId, change: UserChange) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO user_changes (user_id, change) VALUES ($1, $2)")
            .bind(id.as_uuid())
            .bind(change.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn recent_user_changes(&self) -> Result<Vec<UserChangeEvent>, StoreError> {
        let rows: Vec<(i64, Uuid, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT id, user_id, change, changed_at FROM user_changes \
             WHERE changed_at > clock_timestamp() - make_interval(secs => $1) ORDER BY id",
        )
        .bind(USER_CHANGE_WINDOW.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, user_id, change, changed_at)| UserChangeEvent {
                id,
                user_id: UserId::from(user_id),
                change: UserChange::from_db(&change),
                changed_at,
            })
            .collect())
    }

    async fn purge_user_changes(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM user_changes WHERE changed_at < clock_timestamp() - make_interval(secs => $1)",
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
        .bind(passkey.id)
        .bind(passkey.user_id.as_uuid())
        .bind(&passkey.credential_id)
        .bind(&passkey.name)
        .bind(&passkey.credential)
        .bind(passkeys::count_to_db(passkey.sign_count))
        .bind(passkey.backup_eligible)
        .bind(passkey.backup_state)
        .bind(passkey.created_at)
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
        .bind(user.as_uuid())
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
            .bind(id)
            .bind(user.as_uuid())
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn remove_passkey(&self, user: UserId, id: Uuid) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM passkeys WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user.as_uuid())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_passkey_use(&self, used: &PasskeyUse) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE passkeys SET sign_count = $3, backup_state = $4, credential = $5, \
             last_used_at = $6 WHERE id = $1 AND sign_count = $2",
        )
        .bind(used.id)
        .bind(passkeys::count_to_db(used.previous_sign_count))
        .bind(passkeys::count_to_db(used.sign_count))
        .bind(used.backup_state)
        .bind(&used.credential)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
