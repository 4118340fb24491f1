//! The one [`UserStore`] over SQL, [`SqlStore`], for SQLite and PostgreSQL alike.
//!
//! Every statement is written once, in the SQL both dialects speak (`$1` placeholders,
//! `TRUE`/`FALSE`, `ON CONFLICT`, `RETURNING`); what they do not share is behind
//! [`Dialect`], implemented in `sqlite.rs` and `postgres.rs`: how ids and timestamps are
//! stored, the email lookup, the change feed's clock, opening the pool and the migrations.
//!
//! Every write that must be atomic is one conditional statement, or a transaction whose
//! first statement writes. SQLite runs writers one at a time and, the write coming first,
//! takes its write lock up front (so the busy timeout applies rather than an immediate
//! `SQLITE_BUSY`). PostgreSQL locks the row and, under READ COMMITTED, re-evaluates a
//! colliding `UPDATE` against the latest version of it, so no increment is lost and
//! nothing is consumed twice across instances, without explicit locking.
//!
//! Every transaction runs through [`Tx`](super::tx::Tx): its connection goes back to the
//! pool only after `COMMIT` or `ROLLBACK` returned Ok, and is closed otherwise.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::migrate::{Migrate, Migrator};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};
use uuid::Uuid;

use super::attempts::{Attempts, Clock};
use super::invitations::{roles_from_db, roles_to_db};
use super::tx::Tx;
use super::{
    Actor, AttemptClaim, AttemptOutcome, AuditEvent, AuditFilter, AuditOutcome, FailedLogin,
    IN_FLIGHT_GUESS_TTL, INVITATION_RETENTION, Invitation, LinkedIdentity, MAX_AUDIT_PAGE,
    MAX_USER_PAGE, MappedRoles, NewAuditEvent, NewInvitation, NewLinkedIdentity, NewToken, NewUser,
    PasskeyUse, PasswordReset, StoreError, StoredPasskey, TokenKind, UNKNOWN_ATTEMPTS_RETENTION,
    USER_CHANGE_RETENTION, USER_CHANGE_WINDOW, User, UserChange, UserChangeEvent, UserSearch,
    UserStore, lock_deadline, map_migrate, now,
};
use crate::domain::{Email, PasskeyId, UserId};

/// What SQLite and PostgreSQL do differently; implemented on sqlx's `Sqlite` and `Postgres`.
pub(super) trait Dialect: Database<Connection: Migrate> {
    /// A UUID column (ids of users, tokens, passkeys) as bound and read: hyphenated text
    /// on SQLite, `uuid` on PostgreSQL.
    type Id: ColumnType<Self> + From<Uuid> + Into<Uuid>;
    /// A timestamp as bound: fixed-width UTC text on SQLite (so text order is time order),
    /// `timestamptz` on PostgreSQL. Both read back as `DateTime<Utc>`.
    type Time: ColumnType<Self>;
    /// `user_changes.changed_at` and `audit_events.occurred_at` as read: epoch seconds on SQLite, `timestamptz` on PostgreSQL.
    type ChangedAt: ColumnType<Self>;

    /// `SELECT` the user columns `FROM users WHERE` the address is `$1`, the way the
    /// unique index on the address can serve it.
    const FIND_BY_EMAIL: &'static str;
    /// The change-feed entries newer than `$1` seconds ago by the database's clock, by id.
    const RECENT_USER_CHANGES: &'static str;
    /// Deletes the change-feed entries older than `$1` seconds ago by the database's clock.
    const PURGE_USER_CHANGES: &'static str;
    /// Deletes the audit events older than `$1` seconds ago by the database's clock.
    const PURGE_AUDIT_EVENTS: &'static str;

    /// The embedded schema.
    fn migrator() -> &'static Migrator;
    /// Checks that the database would take a write now (for `/health`), without writing.
    fn ping(pool: &Pool<Self>) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Opens a pool on the database `url` names.
    fn open_pool(
        url: &str,
        max_connections: u32,
    ) -> impl Future<Output = Result<Pool<Self>, StoreError>> + Send;
    /// The stored form of a timestamp.
    fn time(t: DateTime<Utc>) -> Self::Time;
    /// A change-feed time as read, as an instant.
    fn changed_at(stored: Self::ChangedAt) -> Result<DateTime<Utc>, StoreError>;
    /// An instant in the form of a database-clock column (`changed_at`, `occurred_at`),
    /// to compare with one.
    fn clock(t: DateTime<Utc>) -> Self::ChangedAt;
    /// How many rows a statement changed.
    fn rows_affected(done: &Self::QueryResult) -> u64;
}

/// A Rust type that both binds to and reads from a column of `DB`.
pub(super) trait ColumnType<DB: Database>:
    Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Send
{
}

impl<DB: Database, T> ColumnType<DB> for T where
    T: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Send
{
}

/// [`UserStore`] on a pool of either dialect.
pub(super) struct SqlStore<DB: Database> {
    pool: Pool<DB>,
}

impl<DB: Dialect> SqlStore<DB> {
    /// Opens the database and brings its schema up to date. (PostgreSQL serialises
    /// concurrent migrators with an advisory lock, so several instances may start at once.)
    pub(super) async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let pool = DB::open_pool(url, max_connections).await?;
        DB::migrator().run(&pool).await.map_err(map_migrate)?;
        Ok(Self { pool })
    }

    /// Applies pending migrations and closes the database again.
    pub(super) async fn migrate_only(url: &str) -> Result<(), StoreError> {
        let pool = DB::open_pool(url, 1).await?;
        let result = DB::migrator().run(&pool).await.map_err(map_migrate);
        pool.close().await;
        result
    }
}

/// A user id as the dialect binds it.
fn id<DB: Dialect>(id: UserId) -> DB::Id {
    id.as_uuid().into()
}

/// The lockout threshold as bound: at least one, and within a SQL `INTEGER`.
fn threshold(max_attempts: u32) -> i32 {
    i32::try_from(max_attempts.max(1)).unwrap_or(i32::MAX)
}

/// A count as stored in an SQL `INTEGER` (saturating).
fn count_to_db(count: u32) -> i32 {
    i32::try_from(count).unwrap_or(i32::MAX)
}

/// Passkey signature counters are 32-bit (WebAuthn §6.1 `signCount`); the column is a
/// 64-bit integer.
fn sign_count_to_db(count: u32) -> i64 {
    i64::from(count)
}

/// Reads a stored signature counter back; anything out of range reads as the largest,
/// which refuses every later use rather than accepting a clone.
fn sign_count_from_db(count: i64) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// True for a unique-constraint violation.
fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// True for a foreign-key violation (the referenced user does not exist).
fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

// The bounds say what the statements need of a database: a connection to run them on and
// the column types they bind and read. Rust does not carry them over from `Dialect`, so the
// two `impl` blocks below each spell them out.
impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row> + Encode<'a, DB> + Type<DB>,
    String: ColumnType<DB>,
    Option<String>: ColumnType<DB>,
    bool: ColumnType<DB>,
    i32: ColumnType<DB>,
    i64: ColumnType<DB>,
    f64: ColumnType<DB>,
    Option<Vec<u8>>: ColumnType<DB>,
    Option<DB::Time>: ColumnType<DB>,
    Option<DB::Id>: ColumnType<DB>,
    Option<DB::ChangedAt>: ColumnType<DB>,
    Option<i64>: ColumnType<DB>,
    DateTime<Utc>: ColumnType<DB>,
{
    async fn roles_of(&self, user: UserId) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT role FROM user_roles WHERE user_id = $1")
            .bind(id::<DB>(user))
            .fetch_all(&self.pool)
            .await?;
        let mut roles = rows
            .iter()
            .map(|row| row.try_get("role"))
            .collect::<Result<Vec<String>, _>>()?;
        // Sorted here rather than by ORDER BY, whose order depends on the collation.
        roles.sort();
        Ok(roles)
    }

    /// Accounts from `rows`, each with its roles from `role_rows` (`user_id`, `role`).
    fn users_with_roles(rows: &[DB::Row], role_rows: &[DB::Row]) -> Result<Vec<User>, StoreError> {
        let mut roles: HashMap<Uuid, Vec<String>> = HashMap::new();
        for row in role_rows {
            let user: DB::Id = row.try_get("user_id")?;
            roles
                .entry(user.into())
                .or_default()
                .push(row.try_get("role")?);
        }
        rows.iter()
            .map(|row| {
                let mut user = Self::user_from_row(row)?;
                if let Some(mut r) = roles.remove(&user.id.as_uuid()) {
                    r.sort();
                    user.roles = r;
                }
                Ok(user)
            })
            .collect()
    }

    /// Stores a passkey on `conn`; `false` when its credential id is taken, `NotFound` when
    /// its account is gone.
    async fn insert_passkey(
        conn: &mut DB::Connection,
        passkey: &StoredPasskey,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO passkeys (id, user_id, credential_id, name, credential, sign_count, \
             backup_eligible, backup_state, created_at, last_used_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)",
        )
        .bind(DB::Id::from(passkey.id.as_uuid()))
        .bind(id::<DB>(passkey.user_id))
        .bind(passkey.credential_id.as_str())
        .bind(passkey.name.as_str())
        .bind(passkey.credential.as_str())
        .bind(sign_count_to_db(passkey.sign_count))
        .bind(passkey.backup_eligible)
        .bind(passkey.backup_state)
        .bind(DB::time(passkey.created_at))
        .execute(&mut *conn)
        .await;
        match inserted {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) if is_foreign_key_violation(&e) => Err(StoreError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    /// Spends the invitation of `token_hash` for `new.email` and creates its account (id
    /// `user`) with the invitation's roles, proven, and `passkey` if given — one
    /// transaction. `None` when the invitation is not usable for that address.
    async fn spend_invitation(
        &self,
        token_hash: &str,
        user: UserId,
        new: NewUser,
        passkey: Option<&StoredPasskey>,
    ) -> Result<Option<User>, StoreError> {
        let at = now();
        // The claim writes first: SQLite takes its write lock up front, and PostgreSQL
        // re-checks a colliding claim against the committed row, so one use wins.
        let mut tx = Tx::begin(&self.pool).await?;
        let claimed = sqlx::query(
            "UPDATE invitations SET used_at = $3 \
             WHERE token_hash = $1 AND email = $2 AND used_at IS NULL \
             AND revoked_at IS NULL AND expires_at > $3 RETURNING roles",
        )
        .bind(token_hash)
        .bind(new.email.as_str())
        .bind(DB::time(at))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = claimed else {
            tx.rollback().await?;
            return Ok(None);
        };
        let roles: String = row.try_get("roles")?;
        let mut account = match Self::insert_user_as(&mut tx, user, new).await {
            Ok(account) => account,
            Err(e) => {
                tx.rollback().await?;
                return Err(e);
            }
        };
        Self::vouch(&mut tx, &mut account, &roles_from_db(&roles)).await?;
        if let Some(passkey) = passkey
            && !Self::insert_passkey(&mut tx, passkey).await?
        {
            tx.rollback().await?;
            return Err(StoreError::DuplicatePasskey);
        }
        tx.commit().await?;
        Ok(Some(account))
    }

    async fn with_roles(&self, row: Option<DB::Row>) -> Result<Option<User>, StoreError> {
        match row {
            None => Ok(None),
            Some(row) => {
                let mut user = Self::user_from_row(&row)?;
                user.roles = self.roles_of(user.id).await?;
                Ok(Some(user))
            }
        }
    }

    /// Runs an `UPDATE users … WHERE id = $1`, turning "no row" into `NotFound`.
    async fn update_user(
        &self,
        query: sqlx::query::Query<'_, DB, DB::Arguments>,
    ) -> Result<(), StoreError> {
        let done = query.execute(&self.pool).await?;
        if DB::rows_affected(&done) == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Appends `change` of `user` to the change feed on `conn`.
    async fn insert_user_change(
        conn: &mut DB::Connection,
        user: UserId,
        change: UserChange,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO user_changes (user_id, change) VALUES ($1, $2)")
            .bind(id::<DB>(user))
            .bind(change.as_str())
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// On `conn` (the reset's transaction, which has just proven `user`'s address): removes
    /// what the account's first registrant could hold — linked identities and the roles
    /// mapped through them, passkeys, the TOTP secret and recovery codes.
    async fn remove_first_registrants_ways_in(
        conn: &mut DB::Connection,
        user: UserId,
    ) -> Result<PasswordReset, StoreError> {
        let rows = sqlx::query("SELECT mapped_roles FROM external_identities WHERE user_id = $1")
            .bind(id::<DB>(user))
            .fetch_all(&mut *conn)
            .await?;
        let mut mapped = Vec::new();
        for row in &rows {
            mapped.extend(roles_from_db(&row.try_get::<String, _>("mapped_roles")?));
        }
        let mut reset = PasswordReset {
            proved_address: true,
            ..PasswordReset::default()
        };
        for role in roles_from_db(&roles_to_db(&mapped)) {
            if Self::delete_role(conn, user, &role).await? {
                reset.mapped_roles.push(role);
            }
        }
        for (query, count) in [
            (
                "DELETE FROM external_identities WHERE user_id = $1",
                &mut reset.identities,
            ),
            (
                "DELETE FROM passkeys WHERE user_id = $1",
                &mut reset.passkeys,
            ),
            (
                "DELETE FROM recovery_codes WHERE user_id = $1",
                &mut reset.recovery_codes,
            ),
        ] {
            let done = sqlx::query(query)
                .bind(id::<DB>(user))
                .execute(&mut *conn)
                .await?;
            *count = DB::rows_affected(&done);
        }
        let totp = sqlx::query(
            "UPDATE users SET two_factor_enabled = FALSE, two_factor_secret = NULL \
             WHERE id = $1 AND (two_factor_enabled OR two_factor_secret IS NOT NULL)",
        )
        .bind(id::<DB>(user))
        .execute(&mut *conn)
        .await?;
        reset.totp = DB::rows_affected(&totp) == 1;
        Ok(reset)
    }

    /// Takes `role` from `user` on `conn`; `true` when it held it.
    async fn delete_role(
        conn: &mut DB::Connection,
        user: UserId,
        role: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND role = $2")
            .bind(id::<DB>(user))
            .bind(role)
            .execute(&mut *conn)
            .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    /// The roles recorded as mapped for the identity (`provider`, `subject`) of `user` on
    /// `conn`; `None` when that identity is not linked to `user`.
    async fn mapped_roles_of(
        conn: &mut DB::Connection,
        user: UserId,
        provider: &str,
        subject: &str,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let row = sqlx::query(
            "SELECT mapped_roles FROM external_identities \
             WHERE provider = $1 AND subject = $2 AND user_id = $3",
        )
        .bind(provider)
        .bind(subject)
        .bind(id::<DB>(user))
        .fetch_optional(&mut *conn)
        .await?;
        row.map(|r| Ok(roles_from_db(&r.try_get::<String, _>("mapped_roles")?)))
            .transpose()
    }

    /// Records `roles` as the ones mapped through the identity (`provider`, `subject`) on
    /// `conn`.
    async fn record_mapped_roles(
        conn: &mut DB::Connection,
        provider: &str,
        subject: &str,
        roles: &[String],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE external_identities SET mapped_roles = $3 WHERE provider = $1 AND subject = $2",
        )
        .bind(provider)
        .bind(subject)
        .bind(roles_to_db(roles))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// On `conn`: `role` is now held otherwise (an operator or an administrator granted it
    /// while the mapping had): no identity of `user` records it as mapped any more.
    async fn forget_mapped_role(
        conn: &mut DB::Connection,
        user: UserId,
        role: &str,
    ) -> Result<(), StoreError> {
        let rows = sqlx::query(
            "SELECT provider, subject, mapped_roles FROM external_identities WHERE user_id = $1",
        )
        .bind(id::<DB>(user))
        .fetch_all(&mut *conn)
        .await?;
        for row in &rows {
            let mut roles = roles_from_db(&row.try_get::<String, _>("mapped_roles")?);
            if roles.iter().any(|r| r == role) {
                roles.retain(|r| r != role);
                let provider: String = row.try_get("provider")?;
                let subject: String = row.try_get("subject")?;
                Self::record_mapped_roles(conn, &provider, &subject, &roles).await?;
            }
        }
        Ok(())
    }

    /// Inserts a new account on `conn` (a pooled connection or a transaction).
    async fn insert_user(conn: &mut DB::Connection, new: NewUser) -> Result<User, StoreError> {
        Self::insert_user_as(conn, UserId::random(), new).await
    }

    /// Inserts a new account with the id `user` (chosen beforehand: a passkey made for the
    /// account names it as its user handle).
    async fn insert_user_as(
        conn: &mut DB::Connection,
        user: UserId,
        new: NewUser,
    ) -> Result<User, StoreError> {
        let at = now();
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, password_hash, first_name, last_name, \
             is_verified, is_active, two_factor_enabled, failed_login_attempts, \
             created_at, updated_at, language) \
             VALUES ($1, $2, $3, $4, $5, FALSE, TRUE, FALSE, 0, $6, $6, $7)",
        )
        .bind(id::<DB>(user))
        .bind(new.email.as_str())
        .bind(new.password_hash.as_str())
        .bind(new.first_name.as_str())
        .bind(new.last_name.as_str())
        .bind(DB::time(at))
        .bind(new.language.as_str())
        .execute(&mut *conn)
        .await;
        match inserted {
            Ok(_) => Ok(User::created(user, new, at)),
            Err(e) if is_unique_violation(&e) => Err(StoreError::DuplicateEmail),
            Err(e) => Err(e.into()),
        }
    }

    /// Links an identity on `conn`; `false` when (provider, subject) is linked already.
    async fn insert_linked_identity(
        conn: &mut DB::Connection,
        identity: &NewLinkedIdentity,
    ) -> Result<bool, StoreError> {
        let at = now();
        let inserted = sqlx::query(
            "INSERT INTO external_identities \
             (provider, subject, user_id, email, created_at, last_used_at) \
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (provider, subject) DO NOTHING",
        )
        .bind(identity.provider.as_str())
        .bind(identity.subject.as_str())
        .bind(id::<DB>(identity.user_id))
        .bind(identity.email.as_str())
        .bind(DB::time(at))
        .execute(&mut *conn)
        .await?;
        Ok(DB::rows_affected(&inserted) == 1)
    }

    /// Stores a mailed token of `user` on `conn` (a pooled connection or a transaction).
    async fn insert_token(
        conn: &mut DB::Connection,
        user: UserId,
        token: &NewToken,
    ) -> Result<(), StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO verification_tokens \
             (id, user_id, kind, token_hash, expires_at, used, created_at) \
             VALUES ($1, $2, $3, $4, $5, FALSE, $6)",
        )
        .bind(DB::Id::from(Uuid::new_v4()))
        .bind(id::<DB>(user))
        .bind(token.kind.as_str())
        .bind(token.token_hash.as_str())
        .bind(DB::time(token.expires_at))
        .bind(DB::time(now()))
        .execute(&mut *conn)
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

    /// Uses up a token on `conn` (a pooled connection or a transaction): its owner, or
    /// `None` when it is unknown, of another kind, used or expired.
    async fn use_token(
        conn: &mut DB::Connection,
        kind: TokenKind,
        token_hash: &str,
    ) -> Result<Option<UserId>, StoreError> {
        let row = sqlx::query(
            "UPDATE verification_tokens SET used = TRUE \
             WHERE token_hash = $1 AND kind = $2 AND NOT used AND expires_at > $3 \
             RETURNING user_id",
        )
        .bind(token_hash)
        .bind(kind.as_str())
        .bind(DB::time(now()))
        .fetch_optional(&mut *conn)
        .await?;
        row.map(|row| {
            Ok(UserId::from_uuid(
                row.try_get::<DB::Id, _>("user_id")?.into(),
            ))
        })
        .transpose()
    }

    /// Marks `user`'s unused tokens of `kind` as used on `conn`; returns how many.
    async fn invalidate(
        conn: &mut DB::Connection,
        user: UserId,
        kind: TokenKind,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE verification_tokens SET used = TRUE \
             WHERE user_id = $1 AND kind = $2 AND NOT used",
        )
        .bind(id::<DB>(user))
        .bind(kind.as_str())
        .execute(&mut *conn)
        .await?;
        Ok(DB::rows_affected(&done))
    }

    /// Proves a new account's address and grants it `roles` on `conn` (the transaction that
    /// created it): an operator or an invitation vouches for it.
    async fn vouch(
        conn: &mut DB::Connection,
        user: &mut User,
        roles: &[String],
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET is_verified = TRUE WHERE id = $1")
            .bind(id::<DB>(user.id))
            .execute(&mut *conn)
            .await?;
        for role in roles {
            sqlx::query(
                "INSERT INTO user_roles (user_id, role) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(id::<DB>(user.id))
            .bind(role.as_str())
            .execute(&mut *conn)
            .await?;
        }
        user.is_verified = true;
        user.roles = roles.to_vec();
        user.roles.sort();
        user.roles.dedup();
        Ok(())
    }

    /// Revokes `email`'s pending invitations on `conn`; returns how many.
    async fn revoke_pending(
        conn: &mut DB::Connection,
        email: &Email,
        at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE invitations SET revoked_at = $2 \
             WHERE email = $1 AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(email.as_str())
        .bind(DB::time(at))
        .execute(&mut *conn)
        .await?;
        Ok(DB::rows_affected(&done))
    }

    fn invitation_from_row(row: &DB::Row) -> Result<Invitation, StoreError> {
        let roles: String = row.try_get("roles")?;
        let created_by: Option<DB::Id> = row.try_get("created_by")?;
        Ok(Invitation {
            id: row.try_get::<DB::Id, _>("id")?.into(),
            email: Email::from_stored(row.try_get("email")?),
            roles: roles_from_db(&roles),
            created_by: created_by.map(|u| UserId::from_uuid(u.into())),
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            used_at: row.try_get("used_at")?,
            revoked_at: row.try_get("revoked_at")?,
        })
    }

    /// Reads the `failed_login_attempts` column; impossible negatives read as zero.
    fn attempts(row: &DB::Row) -> Result<u32, StoreError> {
        let attempts: i32 = row.try_get("failed_login_attempts")?;
        Ok(attempts.max(0).unsigned_abs())
    }

    fn user_from_row(row: &DB::Row) -> Result<User, StoreError> {
        Ok(User {
            id: UserId::from_uuid(row.try_get::<DB::Id, _>("id")?.into()),
            email: Email::from_stored(row.try_get("email")?),
            password_hash: row.try_get("password_hash")?,
            first_name: row.try_get("first_name")?,
            last_name: row.try_get("last_name")?,
            is_verified: row.try_get("is_verified")?,
            is_active: row.try_get("is_active")?,
            two_factor_enabled: row.try_get("two_factor_enabled")?,
            two_factor_secret: row.try_get("two_factor_secret")?,
            failed_login_attempts: Self::attempts(row)?,
            locked_until: row.try_get("locked_until")?,
            last_login: row.try_get("last_login")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            roles: Vec::new(),
            language: row.try_get("language")?,
        })
    }

    fn audit_event_from_row(row: &DB::Row) -> Result<AuditEvent, StoreError> {
        let user = |column: &str| -> Result<Option<UserId>, StoreError> {
            let stored: Option<DB::Id> = row.try_get(column)?;
            Ok(stored.map(|u| UserId::from_uuid(u.into())))
        };
        let actor_kind: String = row.try_get("actor_kind")?;
        let outcome: String = row.try_get("outcome")?;
        Ok(AuditEvent {
            id: row.try_get("id")?,
            at: DB::changed_at(row.try_get("occurred_at")?)?,
            kind: row.try_get("kind")?,
            actor: Actor::from_db(&actor_kind, user("actor_user_id")?),
            subject: user("subject_user_id")?,
            subject_email: row.try_get("subject_email")?,
            client_ip: row.try_get("client_ip")?,
            outcome: AuditOutcome::from_db(&outcome),
            detail: row.try_get("detail")?,
        })
    }

    fn passkey_from_row(row: &DB::Row) -> Result<StoredPasskey, StoreError> {
        Ok(StoredPasskey {
            id: PasskeyId::from_uuid(row.try_get::<DB::Id, _>("id")?.into()),
            user_id: UserId::from_uuid(row.try_get::<DB::Id, _>("user_id")?.into()),
            credential_id: row.try_get("credential_id")?,
            name: row.try_get("name")?,
            credential: row.try_get("credential")?,
            sign_count: sign_count_from_db(row.try_get("sign_count")?),
            backup_eligible: row.try_get("backup_eligible")?,
            backup_state: row.try_get("backup_state")?,
            created_at: row.try_get("created_at")?,
            last_used_at: row.try_get("last_used_at")?,
        })
    }

    /// Binds the key of whose guesses are counted: an account's id or an address's hash.
    fn bind_guesser<'q>(
        query: sqlx::query::Query<'q, DB, DB::Arguments>,
        guesser: Guesser<'q>,
    ) -> sqlx::query::Query<'q, DB, DB::Arguments> {
        match guesser {
            Guesser::Account(user) => query.bind(id::<DB>(user)),
            Guesser::Unknown(email_hash) => query.bind(email_hash),
        }
    }

    /// Applies one step of the lockout rule (`attempts.rs`) to the lockout columns of
    /// `guesser`, read and written in one transaction under the row's lock: the first
    /// statement writes, so PostgreSQL locks the row and SQLite takes its write lock before
    /// anything is read, and concurrent steps on any instance run one after the other.
    async fn step_attempts<T>(
        &self,
        guesser: Guesser<'_>,
        at: DateTime<Utc>,
        step: impl FnOnce(Attempts) -> (Attempts, T),
    ) -> Result<T, StoreError> {
        let mut tx = Tx::begin(&self.pool).await?;
        let row = Self::bind_guesser(sqlx::query(guesser.lock_statement()), guesser)
            .bind(DB::time(at))
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let in_flight: i32 = row.try_get("login_attempts_in_flight")?;
        let before = Attempts {
            failed: Self::attempts(&row)?,
            in_flight: in_flight.max(0).unsigned_abs(),
            in_flight_until: row.try_get("in_flight_until")?,
            locked_until: row.try_get("locked_until")?,
        };
        let (after, answer) = step(before);
        if after != before {
            Self::bind_guesser(sqlx::query(guesser.write_statement()), guesser)
                .bind(count_to_db(after.failed))
                .bind(count_to_db(after.in_flight))
                .bind(after.in_flight_until.map(DB::time))
                .bind(after.locked_until.map(DB::time))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(answer)
    }
}

/// Whose guesses a lockout step counts.
#[derive(Clone, Copy)]
enum Guesser<'a> {
    /// An account, by id (`users`).
    Account(UserId),
    /// An address with no account, by the SHA-256 hex of its canonical form
    /// (`unknown_login_attempts`).
    Unknown(&'a str),
}

impl Guesser<'_> {
    /// Writes the row (an unknown address's is created at zero) and returns its lockout
    /// columns; `$1` the key, `$2` now.
    const fn lock_statement(self) -> &'static str {
        match self {
            Self::Account(_) => {
                "UPDATE users SET updated_at = $2 WHERE id = $1 \
                 RETURNING failed_login_attempts, login_attempts_in_flight, in_flight_until, \
                 locked_until"
            }
            Self::Unknown(_) => {
                "INSERT INTO unknown_login_attempts \
                   (email_hash, failed_login_attempts, locked_until, updated_at) \
                 VALUES ($1, 0, NULL, $2) \
                 ON CONFLICT (email_hash) DO UPDATE SET updated_at = $2 \
                 RETURNING failed_login_attempts, login_attempts_in_flight, in_flight_until, \
                 locked_until"
            }
        }
    }

    /// Stores the lockout columns; `$1` the key, then the four columns.
    const fn write_statement(self) -> &'static str {
        match self {
            Self::Account(_) => {
                "UPDATE users SET failed_login_attempts = $2, login_attempts_in_flight = $3, \
                 in_flight_until = $4, locked_until = $5 WHERE id = $1"
            }
            Self::Unknown(_) => {
                "UPDATE unknown_login_attempts SET failed_login_attempts = $2, \
                 login_attempts_in_flight = $3, in_flight_until = $4, locked_until = $5 \
                 WHERE email_hash = $1"
            }
        }
    }
}

/// The instants a lockout step started now needs, for a lock of `lock_for`.
fn attempts_clock(lock_for: Duration) -> Result<Clock, StoreError> {
    let at = now();
    Ok(Clock {
        now: at,
        lock_until: lock_deadline(at, lock_for)?,
        claim_until: lock_deadline(at, IN_FLIGHT_GUESS_TTL)?,
    })
}

#[async_trait]
impl<DB> UserStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row> + Encode<'a, DB> + Type<DB>,
    String: ColumnType<DB>,
    Option<String>: ColumnType<DB>,
    bool: ColumnType<DB>,
    i32: ColumnType<DB>,
    i64: ColumnType<DB>,
    f64: ColumnType<DB>,
    Option<Vec<u8>>: ColumnType<DB>,
    Option<DB::Time>: ColumnType<DB>,
    Option<DB::Id>: ColumnType<DB>,
    Option<DB::ChangedAt>: ColumnType<DB>,
    Option<i64>: ColumnType<DB>,
    DateTime<Utc>: ColumnType<DB>,
{
    async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::insert_user(&mut conn, new).await
    }

    async fn create_user_with_token(
        &self,
        new: NewUser,
        token: NewToken,
    ) -> Result<User, StoreError> {
        // The user's INSERT comes first, so SQLite takes its write lock up front.
        let mut tx = Tx::begin(&self.pool).await?;
        let user = Self::insert_user(&mut tx, new).await?;
        Self::insert_token(&mut tx, user.id, &token).await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn create_vouched_user(
        &self,
        new: NewUser,
        roles: &[String],
    ) -> Result<User, StoreError> {
        let mut tx = Tx::begin(&self.pool).await?;
        let mut user = Self::insert_user(&mut tx, new).await?;
        Self::vouch(&mut tx, &mut user, roles).await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn delete_user(&self, user: UserId) -> Result<bool, StoreError> {
        // The feed's entry first: SQLite takes its write lock up front, and the entry and
        // the deletion stand or fall together. Roles, tokens, recovery codes and passkeys
        // go with the row (ON DELETE CASCADE); the address's pending invitations, and those
        // the account made, are revoked.
        let mut tx = Tx::begin(&self.pool).await?;
        sqlx::query("INSERT INTO user_changes (user_id, change) VALUES ($1, $2)")
            .bind(id::<DB>(user))
            .bind(UserChange::SessionsEnded.as_str())
            .execute(&mut *tx)
            .await?;
        // What the account invited goes with it: `created_by` would be emptied by the
        // deletion, and an invitation of nobody's reads as an operator's.
        sqlx::query(
            "UPDATE invitations SET revoked_at = $2 \
             WHERE created_by = $1 AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(id::<DB>(user))
        .bind(DB::time(now()))
        .execute(&mut *tx)
        .await?;
        let deleted = sqlx::query("DELETE FROM users WHERE id = $1 RETURNING email")
            .bind(id::<DB>(user))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = deleted else {
            tx.rollback().await?;
            return Ok(false);
        };
        let email = Email::from_stored(row.try_get("email")?);
        // A link still pending for the address would bring the account back, roles and all.
        Self::revoke_pending(&mut tx, &email, now()).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(DB::FIND_BY_EMAIL)
            .bind(email.as_str())
            .fetch_optional(&self.pool)
            .await?;
        self.with_roles(row).await
    }

    async fn find_by_id(&self, user: UserId) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id = $1"
        ))
        .bind(id::<DB>(user))
        .fetch_optional(&self.pool)
        .await?;
        self.with_roles(row).await
    }

    async fn search_users(&self, search: &UserSearch) -> Result<Vec<User>, StoreError> {
        // The same filter twice: the page, then the roles of the accounts on it.
        macro_rules! page {
            () => {
                " FROM users WHERE (lower(email) LIKE $1 ESCAPE '\\' \
                 OR lower(first_name) LIKE $1 ESCAPE '\\' \
                 OR lower(last_name) LIKE $1 ESCAPE '\\') ORDER BY email LIMIT $2 OFFSET $3"
            };
        }
        let pattern = search.like_pattern();
        let limit = i64::from(search.limit.clamp(1, MAX_USER_PAGE));
        let offset = i64::from(search.offset);
        let rows = sqlx::query(concat!("SELECT ", user_columns!(), page!()))
            .bind(&pattern)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        let role_rows = sqlx::query(concat!(
            "SELECT user_id, role FROM user_roles WHERE user_id IN (SELECT id",
            page!(),
            ")"
        ))
        .bind(&pattern)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        Self::users_with_roles(&rows, &role_rows)
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        let role_rows = sqlx::query("SELECT user_id, role FROM user_roles")
            .fetch_all(&self.pool)
            .await?;
        Self::users_with_roles(&rows, &role_rows)
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS users FROM users")
            .fetch_one(&self.pool)
            .await?;
        let users: i64 = row.try_get("users")?;
        Ok(u64::try_from(users).unwrap_or(0))
    }

    async fn update_profile(
        &self,
        user: UserId,
        first_name: Option<String>,
        last_name: Option<String>,
    ) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(concat!(
            "UPDATE users SET first_name = COALESCE($2, first_name), \
             last_name = COALESCE($3, last_name), updated_at = $4 WHERE id = $1 RETURNING ",
            user_columns!()
        ))
        .bind(id::<DB>(user))
        .bind(first_name)
        .bind(last_name)
        .bind(DB::time(now()))
        .fetch_optional(&self.pool)
        .await?;
        self.with_roles(row).await
    }

    async fn set_password_hash(&self, user: UserId, password_hash: &str) -> Result<(), StoreError> {
        self.update_user(
            sqlx::query("UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1")
                .bind(id::<DB>(user))
                .bind(password_hash)
                .bind(DB::time(now())),
        )
        .await
    }

    async fn set_language(&self, user: UserId, language: &str) -> Result<(), StoreError> {
        self.update_user(
            sqlx::query("UPDATE users SET language = $2, updated_at = $3 WHERE id = $1")
                .bind(id::<DB>(user))
                .bind(language)
                .bind(DB::time(now())),
        )
        .await
    }

    async fn reset_password(
        &self,
        user: UserId,
        password_hash: &str,
    ) -> Result<PasswordReset, StoreError> {
        let mut tx = Tx::begin(&self.pool).await?;
        // Writing the row first takes its lock (the row's on PostgreSQL, the database's on
        // SQLite), so whether the address was unproven is read once, by this transaction.
        let done = sqlx::query(
            "UPDATE users SET password_hash = $2, failed_login_attempts = 0, \
             locked_until = NULL, updated_at = $3 WHERE id = $1",
        )
        .bind(id::<DB>(user))
        .bind(password_hash)
        .bind(DB::time(now()))
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&done) == 0 {
            return Err(StoreError::NotFound);
        }
        let proved =
            sqlx::query("UPDATE users SET is_verified = TRUE WHERE id = $1 AND NOT is_verified")
                .bind(id::<DB>(user))
                .execute(&mut *tx)
                .await?;
        let mut reset = PasswordReset::default();
        if DB::rows_affected(&proved) == 1 {
            reset = Self::remove_first_registrants_ways_in(&mut tx, user).await?;
            Self::insert_user_change(&mut tx, user, UserChange::Updated).await?;
        }
        tx.commit().await?;
        Ok(reset)
    }

    async fn mark_verified(&self, user: UserId) -> Result<(), StoreError> {
        self.update_user(
            sqlx::query("UPDATE users SET is_verified = TRUE, updated_at = $2 WHERE id = $1")
                .bind(id::<DB>(user))
                .bind(DB::time(now())),
        )
        .await
    }

    async fn set_active(&self, user: UserId, active: bool) -> Result<(), StoreError> {
        self.update_user(
            sqlx::query("UPDATE users SET is_active = $2, updated_at = $3 WHERE id = $1")
                .bind(id::<DB>(user))
                .bind(active)
                .bind(DB::time(now())),
        )
        .await
    }

    async fn record_failed_login(
        &self,
        user: UserId,
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
        .bind(id::<DB>(user))
        .bind(DB::time(at))
        .bind(threshold(max_attempts))
        .bind(DB::time(deadline))
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        let locked_until: Option<DateTime<Utc>> = row.try_get("locked_until")?;
        let attempts = Self::attempts(&row)?;
        // The failure that set the lock is the one whose count reached the threshold (the
        // count starts again at 1 once a lock has passed). Comparing the stored deadline with
        // this call's would also name a concurrent failure stamped in the same microsecond.
        let newly_locked =
            locked_until.is_some() && i64::from(attempts) == i64::from(threshold(max_attempts));
        Ok(FailedLogin {
            attempts,
            locked_until,
            newly_locked,
        })
    }

    async fn claim_login_attempt(
        &self,
        user: UserId,
        max_attempts: u32,
        lock_for: Duration,
    ) -> Result<AttemptClaim, StoreError> {
        let clock = attempts_clock(lock_for)?;
        self.step_attempts(Guesser::Account(user), clock.now, |a| {
            a.claim(&clock, max_attempts)
        })
        .await
    }

    async fn resolve_login_attempt(
        &self,
        user: UserId,
        outcome: AttemptOutcome,
        max_attempts: u32,
        lock_for: Duration,
    ) -> Result<FailedLogin, StoreError> {
        let clock = attempts_clock(lock_for)?;
        self.step_attempts(Guesser::Account(user), clock.now, |a| {
            a.resolve(outcome, &clock, max_attempts)
        })
        .await
    }

    async fn claim_unknown_login_attempt(
        &self,
        email_hash: &str,
        max_attempts: u32,
        lock_for: Duration,
    ) -> Result<AttemptClaim, StoreError> {
        let clock = attempts_clock(lock_for)?;
        self.step_attempts(Guesser::Unknown(email_hash), clock.now, |a| {
            a.claim(&clock, max_attempts)
        })
        .await
    }

    async fn resolve_unknown_login_attempt(
        &self,
        email_hash: &str,
        max_attempts: u32,
        lock_for: Duration,
    ) -> Result<FailedLogin, StoreError> {
        let clock = attempts_clock(lock_for)?;
        self.step_attempts(Guesser::Unknown(email_hash), clock.now, |a| {
            a.resolve(AttemptOutcome::Wrong, &clock, max_attempts)
        })
        .await
    }

    async fn purge_unknown_login_attempts(&self) -> Result<u64, StoreError> {
        let at = now();
        let idle_since =
            at - TimeDelta::from_std(UNKNOWN_ATTEMPTS_RETENTION).unwrap_or(TimeDelta::days(1));
        let done = sqlx::query(
            "DELETE FROM unknown_login_attempts \
             WHERE updated_at < $1 AND (locked_until IS NULL OR locked_until <= $2)",
        )
        .bind(DB::time(idle_since))
        .bind(DB::time(at))
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done))
    }

    async fn record_successful_login(&self, user: UserId) -> Result<(), StoreError> {
        self.update_user(
            sqlx::query(
                "UPDATE users SET failed_login_attempts = 0, locked_until = NULL, \
                 last_login = $2, updated_at = $2 WHERE id = $1",
            )
            .bind(id::<DB>(user))
            .bind(DB::time(now())),
        )
        .await
    }

    async fn unlock(&self, user: UserId) -> Result<(), StoreError> {
        self.update_user(
            sqlx::query(
                "UPDATE users SET failed_login_attempts = 0, locked_until = NULL, \
                 updated_at = $2 WHERE id = $1",
            )
            .bind(id::<DB>(user))
            .bind(DB::time(now())),
        )
        .await
    }

    async fn grant_role(&self, user: UserId, role: &str) -> Result<bool, StoreError> {
        let mut tx = Tx::begin(&self.pool).await?;
        let inserted = sqlx::query(
            "INSERT INTO user_roles (user_id, role) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(id::<DB>(user))
        .bind(role)
        .execute(&mut *tx)
        .await;
        let granted = match inserted {
            Ok(done) => DB::rows_affected(&done) == 1,
            Err(e) if is_foreign_key_violation(&e) => return Err(StoreError::NotFound),
            Err(e) => return Err(e.into()),
        };
        // Granted on purpose, it is no longer the mapping's to take back.
        Self::forget_mapped_role(&mut tx, user, role).await?;
        tx.commit().await?;
        Ok(granted)
    }

    async fn revoke_role(&self, user: UserId, role: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND role = $2")
            .bind(id::<DB>(user))
            .bind(role)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn set_two_factor(
        &self,
        user: UserId,
        secret: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let enabled = secret.is_some();
        let mut tx = Tx::begin(&self.pool).await?;
        let done = sqlx::query(
            "UPDATE users SET two_factor_enabled = $2, two_factor_secret = $3, updated_at = $4 \
             WHERE id = $1",
        )
        .bind(id::<DB>(user))
        .bind(enabled)
        .bind(secret)
        .bind(DB::time(now()))
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&done) == 0 {
            return Err(StoreError::NotFound);
        }
        if !enabled {
            sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
                .bind(id::<DB>(user))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn replace_recovery_codes(
        &self,
        user: UserId,
        hashes: &[String],
    ) -> Result<(), StoreError> {
        let at = now();
        let mut tx = Tx::begin(&self.pool).await?;
        // Writing the user row first checks that the user exists and takes the lock (the
        // row's on PostgreSQL, the database's on SQLite) before anything is read, so two
        // replacements for the same user run one after the other.
        let done = sqlx::query("UPDATE users SET updated_at = $2 WHERE id = $1")
            .bind(id::<DB>(user))
            .bind(DB::time(at))
            .execute(&mut *tx)
            .await?;
        if DB::rows_affected(&done) == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(id::<DB>(user))
            .execute(&mut *tx)
            .await?;
        for hash in hashes {
            sqlx::query(
                "INSERT INTO recovery_codes (user_id, code_hash, used, created_at) \
                 VALUES ($1, $2, FALSE, $3) ON CONFLICT DO NOTHING",
            )
            .bind(id::<DB>(user))
            .bind(hash.as_str())
            .bind(DB::time(at))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn consume_recovery_code(
        &self,
        user: UserId,
        code_hash: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE recovery_codes SET used = TRUE \
             WHERE user_id = $1 AND code_hash = $2 AND NOT used",
        )
        .bind(id::<DB>(user))
        .bind(code_hash)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn count_unused_recovery_codes(&self, user: UserId) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS unused FROM recovery_codes WHERE user_id = $1 AND NOT used",
        )
        .bind(id::<DB>(user))
        .fetch_one(&self.pool)
        .await?;
        let unused: i64 = row.try_get("unused")?;
        Ok(u64::try_from(unused).unwrap_or(0))
    }

    async fn create_token(
        &self,
        user: UserId,
        kind: TokenKind,
        token_hash: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let token = NewToken {
            kind,
            token_hash: token_hash.to_owned(),
            expires_at,
        };
        let mut conn = self.pool.acquire().await?;
        Self::insert_token(&mut conn, user, &token).await
    }

    async fn replace_token(&self, user: UserId, token: NewToken) -> Result<(), StoreError> {
        let mut tx = Tx::begin(&self.pool).await?;
        // Writing the user row first checks that the user exists and takes the lock (the
        // row's on PostgreSQL, the database's on SQLite) before the tokens are touched.
        let done = sqlx::query("UPDATE users SET updated_at = $2 WHERE id = $1")
            .bind(id::<DB>(user))
            .bind(DB::time(now()))
            .execute(&mut *tx)
            .await?;
        if DB::rows_affected(&done) == 0 {
            return Err(StoreError::NotFound);
        }
        Self::invalidate(&mut tx, user, token.kind).await?;
        Self::insert_token(&mut tx, user, &token).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn verify_address(&self, token_hash: &str) -> Result<Option<UserId>, StoreError> {
        let mut tx = Tx::begin(&self.pool).await?;
        let Some(user) = Self::use_token(&mut tx, TokenKind::EmailVerification, token_hash).await?
        else {
            tx.rollback().await?;
            return Ok(None);
        };
        sqlx::query("UPDATE users SET is_verified = TRUE, updated_at = $2 WHERE id = $1")
            .bind(id::<DB>(user))
            .bind(DB::time(now()))
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO user_changes (user_id, change) VALUES ($1, $2)")
            .bind(id::<DB>(user))
            .bind(UserChange::Updated.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(user))
    }

    async fn consume_token(
        &self,
        kind: TokenKind,
        token_hash: &str,
    ) -> Result<Option<UserId>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::use_token(&mut conn, kind, token_hash).await
    }

    async fn token_owner(
        &self,
        kind: TokenKind,
        token_hash: &str,
    ) -> Result<Option<UserId>, StoreError> {
        let row = sqlx::query(
            "SELECT user_id FROM verification_tokens \
             WHERE token_hash = $1 AND kind = $2 AND NOT used AND expires_at > $3",
        )
        .bind(token_hash)
        .bind(kind.as_str())
        .bind(DB::time(now()))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(UserId::from_uuid(
                row.try_get::<DB::Id, _>("user_id")?.into(),
            ))
        })
        .transpose()
    }

    async fn invalidate_tokens(&self, user: UserId, kind: TokenKind) -> Result<u64, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::invalidate(&mut conn, user, kind).await
    }

    async fn purge_expired_tokens(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM verification_tokens WHERE expires_at <= $1")
            .bind(DB::time(now()))
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done))
    }

    async fn purge_invitations(&self) -> Result<u64, StoreError> {
        let before = now() - TimeDelta::from_std(INVITATION_RETENTION).unwrap_or_default();
        let done = sqlx::query("DELETE FROM invitations WHERE expires_at <= $1")
            .bind(DB::time(before))
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done))
    }

    async fn record_user_change(&self, user: UserId, change: UserChange) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO user_changes (user_id, change) VALUES ($1, $2)")
            .bind(id::<DB>(user))
            .bind(change.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn recent_user_changes(&self) -> Result<Vec<UserChangeEvent>, StoreError> {
        let rows = sqlx::query(DB::RECENT_USER_CHANGES)
            .bind(USER_CHANGE_WINDOW.as_secs_f64())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let change: String = row.try_get("change")?;
                Ok(UserChangeEvent {
                    id: row.try_get("id")?,
                    user_id: UserId::from_uuid(row.try_get::<DB::Id, _>("user_id")?.into()),
                    change: UserChange::from_db(&change),
                    changed_at: DB::changed_at(row.try_get("changed_at")?)?,
                })
            })
            .collect()
    }

    async fn purge_user_changes(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(DB::PURGE_USER_CHANGES)
            .bind(USER_CHANGE_RETENTION.as_secs_f64())
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done))
    }

    async fn add_passkey(&self, passkey: &StoredPasskey) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::insert_passkey(&mut conn, passkey).await
    }

    async fn list_passkeys(&self, user: UserId) -> Result<Vec<StoredPasskey>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            passkey_columns!(),
            " FROM passkeys WHERE user_id = $1 ORDER BY created_at, id"
        ))
        .bind(id::<DB>(user))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::passkey_from_row).collect()
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
        row.as_ref().map(Self::passkey_from_row).transpose()
    }

    async fn rename_passkey(
        &self,
        user: UserId,
        key: PasskeyId,
        name: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE passkeys SET name = $3 WHERE id = $1 AND user_id = $2")
            .bind(DB::Id::from(key.as_uuid()))
            .bind(id::<DB>(user))
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn remove_passkey(&self, user: UserId, key: PasskeyId) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM passkeys WHERE id = $1 AND user_id = $2")
            .bind(DB::Id::from(key.as_uuid()))
            .bind(id::<DB>(user))
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn record_passkey_use(&self, used: &PasskeyUse) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE passkeys SET sign_count = $3, backup_state = $4, credential = $5, \
             last_used_at = $6 WHERE id = $1 AND sign_count = $2",
        )
        .bind(DB::Id::from(used.id.as_uuid()))
        .bind(sign_count_to_db(used.previous_sign_count))
        .bind(sign_count_to_db(used.sign_count))
        .bind(used.backup_state)
        .bind(used.credential.as_str())
        .bind(DB::time(now()))
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn create_invitation(&self, new: NewInvitation) -> Result<Invitation, StoreError> {
        let at = now();
        let invitation = Invitation {
            id: Uuid::new_v4(),
            email: new.email,
            roles: roles_from_db(&roles_to_db(&new.roles)),
            created_by: new.created_by,
            created_at: at,
            expires_at: new.expires_at,
            used_at: None,
            revoked_at: None,
        };
        // The revocation writes first, so SQLite takes its write lock up front.
        let mut tx = Tx::begin(&self.pool).await?;
        Self::revoke_pending(&mut tx, &invitation.email, at).await?;
        let inserted = sqlx::query(
            "INSERT INTO invitations \
             (id, email, token_hash, roles, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(DB::Id::from(invitation.id))
        .bind(invitation.email.as_str())
        .bind(new.token_hash.as_str())
        .bind(roles_to_db(&invitation.roles))
        .bind(invitation.created_by.map(id::<DB>))
        .bind(DB::time(at))
        .bind(DB::time(invitation.expires_at))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_foreign_key_violation(&e) => return Err(StoreError::NotFound),
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(invitation)
    }

    async fn list_invitations(&self) -> Result<Vec<Invitation>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            invitation_columns!(),
            " FROM invitations ORDER BY created_at DESC, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::invitation_from_row).collect()
    }

    async fn find_invitation(&self, token_hash: &str) -> Result<Option<Invitation>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            invitation_columns!(),
            " FROM invitations WHERE token_hash = $1 AND used_at IS NULL \
             AND revoked_at IS NULL AND expires_at > $2"
        ))
        .bind(token_hash)
        .bind(DB::time(now()))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Self::invitation_from_row).transpose()
    }

    async fn revoke_invitations(&self, email: &Email) -> Result<u64, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::revoke_pending(&mut conn, email, now()).await
    }

    async fn accept_invitation(
        &self,
        token_hash: &str,
        new: NewUser,
    ) -> Result<Option<User>, StoreError> {
        self.spend_invitation(token_hash, UserId::random(), new, None)
            .await
    }

    async fn accept_invitation_with_passkey(
        &self,
        token_hash: &str,
        new: NewUser,
        passkey: &StoredPasskey,
    ) -> Result<Option<User>, StoreError> {
        self.spend_invitation(token_hash, passkey.user_id, new, Some(passkey))
            .await
    }

    async fn record_audit_event(&self, event: &NewAuditEvent) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_events (kind, actor_kind, actor_user_id, subject_user_id, \
             subject_email, client_ip, outcome, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(event.kind.as_str())
        .bind(event.actor.kind())
        .bind(event.actor.user_id().map(id::<DB>))
        .bind(event.subject.map(id::<DB>))
        .bind(event.subject_email.as_ref().map(|e| e.as_str().to_owned()))
        .bind(event.client_ip.map(|ip| ip.to_string()))
        .bind(event.outcome.as_str())
        .bind(event.detail.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let limit = i64::from(filter.limit.clamp(1, MAX_AUDIT_PAGE));
        let rows = sqlx::query(
            "SELECT id, occurred_at, kind, actor_kind, actor_user_id, subject_user_id, \
             subject_email, client_ip, outcome, detail FROM audit_events \
             WHERE ($1 IS NULL OR subject_user_id = $1) AND ($2 IS NULL OR subject_email = $2) \
             AND ($3 IS NULL OR kind = $3) AND ($4 IS NULL OR occurred_at >= $4) \
             AND ($5 IS NULL OR occurred_at < $5) AND ($6 IS NULL OR id < $6) \
             ORDER BY id DESC LIMIT $7",
        )
        .bind(filter.user.map(id::<DB>))
        .bind(filter.email.as_ref().map(|e| e.as_str().to_owned()))
        .bind(filter.kind.map(|k| k.as_str().to_owned()))
        .bind(filter.since.map(DB::clock))
        .bind(filter.until.map(DB::clock))
        .bind(filter.before_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::audit_event_from_row).collect()
    }

    async fn purge_audit_events(&self, retention: Duration) -> Result<u64, StoreError> {
        let done = sqlx::query(DB::PURGE_AUDIT_EVENTS)
            .bind(retention.as_secs_f64())
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done))
    }

    async fn find_linked_user(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<UserId>, StoreError> {
        let row = sqlx::query(
            "SELECT user_id FROM external_identities WHERE provider = $1 AND subject = $2",
        )
        .bind(provider)
        .bind(subject)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok(UserId::from_uuid(r.try_get::<DB::Id, _>("user_id")?.into())))
            .transpose()
    }

    async fn link_identity(&self, identity: &NewLinkedIdentity) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::insert_linked_identity(&mut conn, identity).await
    }

    async fn create_linked_user(
        &self,
        new: NewUser,
        verified: bool,
        identity: &NewLinkedIdentity,
    ) -> Result<User, StoreError> {
        let mut tx = Tx::begin(&self.pool).await?;
        let mut user = Self::insert_user_as(&mut tx, identity.user_id, new).await?;
        if verified {
            Self::vouch(&mut tx, &mut user, &[]).await?;
        }
        if !Self::insert_linked_identity(&mut tx, identity).await? {
            tx.rollback().await?;
            return Err(StoreError::Other(
                "the identity was linked to another account meanwhile".into(),
            ));
        }
        tx.commit().await?;
        Ok(user)
    }

    async fn apply_role_mapping(
        &self,
        user: UserId,
        provider: &str,
        subject: &str,
        given: &[String],
    ) -> Result<MappedRoles, StoreError> {
        let mut tx = Tx::begin(&self.pool).await?;
        // A write first takes the lock (the row's on PostgreSQL, the database's on SQLite),
        // so two sign-ins of one account apply the mapping one after the other.
        sqlx::query("UPDATE users SET is_active = is_active WHERE id = $1")
            .bind(id::<DB>(user))
            .execute(&mut *tx)
            .await?;
        let Some(mut recorded) = Self::mapped_roles_of(&mut tx, user, provider, subject).await?
        else {
            tx.rollback().await?;
            return Ok(MappedRoles::default());
        };
        let mut changes = MappedRoles::default();
        for role in roles_from_db(&roles_to_db(given)) {
            let inserted = sqlx::query(
                "INSERT INTO user_roles (user_id, role) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(id::<DB>(user))
            .bind(role.as_str())
            .execute(&mut *tx)
            .await?;
            if DB::rows_affected(&inserted) == 1 {
                recorded.push(role.clone());
                changes.granted.push(role);
            }
        }
        let (kept, gone): (Vec<String>, Vec<String>) =
            recorded.into_iter().partition(|r| given.contains(r));
        for role in gone {
            if Self::delete_role(&mut tx, user, &role).await? {
                changes.revoked.push(role);
            }
        }
        Self::record_mapped_roles(&mut tx, provider, subject, &kept).await?;
        if changes.changed() {
            Self::insert_user_change(&mut tx, user, UserChange::Updated).await?;
        }
        tx.commit().await?;
        Ok(changes)
    }

    async fn linked_identities(&self, user: UserId) -> Result<Vec<LinkedIdentity>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, provider, subject, email, created_at, last_used_at, mapped_roles \
             FROM external_identities WHERE user_id = $1 ORDER BY created_at, provider, subject",
        )
        .bind(id::<DB>(user))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(LinkedIdentity {
                    user_id: UserId::from_uuid(row.try_get::<DB::Id, _>("user_id")?.into()),
                    provider: row.try_get("provider")?,
                    subject: row.try_get("subject")?,
                    email: row.try_get("email")?,
                    created_at: row.try_get("created_at")?,
                    last_used_at: row.try_get("last_used_at")?,
                    mapped_roles: roles_from_db(&row.try_get::<String, _>("mapped_roles")?),
                })
            })
            .collect()
    }

    async fn touch_linked_identity(
        &self,
        provider: &str,
        subject: &str,
        email: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE external_identities SET last_used_at = $3, email = $4 \
             WHERE provider = $1 AND subject = $2",
        )
        .bind(provider)
        .bind(subject)
        .bind(DB::time(now()))
        .bind(email)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn unlink_identity(
        &self,
        user: UserId,
        provider: &str,
        subject: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM external_identities WHERE user_id = $1 AND provider = $2 AND subject = $3",
        )
        .bind(id::<DB>(user))
        .bind(provider)
        .bind(subject)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        DB::ping(&self.pool).await
    }
}
