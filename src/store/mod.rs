//! The identity store: accounts, roles, verification tokens and 2FA recovery codes.
//!
//! One trait, [`UserStore`], with a SQLite backend (the embedded default) and a
//! PostgreSQL backend (shared by several gateway instances), picked by [`connect`]
//! from the URL scheme. Both are one implementation over sqlx's runtime query API
//! (`sql.rs`), with what the dialects do differently, embedded migrations included, in
//! `sqlite.rs` and `postgres.rs`.
//!
//! Nothing here is on the proxy hot path: only the account API, the CLI and the
//! background token purger call it.

/// The `passkeys` columns every query that builds a [`StoredPasskey`] selects.
macro_rules! passkey_columns {
    () => {
        "id, user_id, credential_id, name, credential, sign_count, backup_eligible, \
         backup_state, created_at, last_used_at"
    };
}

/// The `users` columns every query that builds a [`User`] selects, in one place so
/// the dialects' own lookups cannot drift from the shared ones.
macro_rules! user_columns {
    () => {
        "id, email, password_hash, first_name, last_name, is_verified, is_active, \
         two_factor_enabled, two_factor_secret, failed_login_attempts, locked_until, \
         last_login, created_at, updated_at, language"
    };
}

/// The `invitations` columns every query that builds an [`Invitation`] selects.
macro_rules! invitation_columns {
    () => {
        "id, email, roles, created_by, created_at, expires_at, used_at, revoked_at"
    };
}

pub mod admin;
mod attempts;
mod audit;
mod federation;
mod invitations;
mod passkeys;
mod postgres;
mod runtime;
mod sql;
mod sqlite;
mod tx;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::{Postgres, Sqlite};
use tokio::task::JoinHandle;

use sql::SqlStore;

use crate::config::StorageUrl;
use crate::domain::{Email, PasskeyId, UserId};
use crate::reply::Reply;

pub use audit::{
    Actor, AuditEvent, AuditFilter, AuditKind, AuditOutcome, DEFAULT_AUDIT_RETENTION,
    MAX_AUDIT_PAGE, MAX_DETAIL_CHARS, NewAuditEvent,
};
pub use federation::{LinkedIdentity, MappedRoles, NewLinkedIdentity, PasswordReset};
pub use invitations::{Invitation, InvitationState, NewInvitation};
pub use passkeys::{MAX_NAME_CHARS as MAX_PASSKEY_NAME_CHARS, PasskeyUse, StoredPasskey};

/// Why a store call failed; the API maps `Unavailable` to 503 and the rest as it sees fit.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another account already uses this email (compared case-insensitively).
    #[error("an account with this email already exists")]
    DuplicateEmail,
    /// The user the call names does not exist.
    #[error("no such user")]
    NotFound,
    /// The passkey's credential id is registered already (to any account).
    #[error("this passkey is registered already")]
    DuplicatePasskey,
    /// The database cannot be reached or the pool is exhausted: retry later.
    #[error("user store unavailable: {0}")]
    Unavailable(String),
    /// Anything else; the message names the failure but never carries SQL parameters.
    #[error("user store error: {0}")]
    Other(String),
}

/// The two kinds of single-use mailed token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// Proves ownership of the address; 24 h by the API's rules.
    EmailVerification,
    /// Allows setting a new password; 1 h by the API's rules.
    PasswordReset,
}

impl TokenKind {
    /// The value stored in the `kind` column.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::EmailVerification => "email_verification",
            Self::PasswordReset => "password_reset",
        }
    }
}

impl UserChange {
    /// The value stored in the `change` column.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Updated => "updated",
            Self::SessionsEnded => "sessions_ended",
        }
    }

    /// Reads the `change` column; anything unknown is treated as the stronger change.
    pub(crate) fn from_db(value: &str) -> Self {
        match value {
            "updated" => Self::Updated,
            _ => Self::SessionsEnded,
        }
    }
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What registration hands to the store; the password is already hashed.
#[derive(Clone)]
pub struct NewUser {
    /// The canonical address.
    pub email: Email,
    /// The bcrypt hash of the password.
    pub password_hash: String,
    /// Given name as typed.
    pub first_name: String,
    /// Family name as typed.
    pub last_name: String,
    /// The language registered in (`ru`), for mails; `""` when not known.
    pub language: String,
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("email", &self.email)
            .field("password_hash", &"<redacted>")
            .field("first_name", &self.first_name)
            .field("last_name", &self.last_name)
            .field("language", &self.language)
            .finish()
    }
}

/// A single-use mailed token to store: its kind, the SHA-256 hex of its text and when it
/// stops working. The text itself is only ever mailed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewToken {
    /// What the token allows.
    pub kind: TokenKind,
    /// SHA-256 hex of the token's text.
    pub token_hash: String,
    /// When the token stops working.
    pub expires_at: DateTime<Utc>,
}

/// The most accounts one page of [`UserStore::search_users`] holds.
pub const MAX_USER_PAGE: u32 = 100;

/// Which accounts [`UserStore::search_users`] answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserSearch {
    /// Text the address, first or last name contains (any case); `""` matches every account.
    pub text: String,
    /// How many matching accounts to skip (`(page - 1) × limit` for a 1-based page).
    pub offset: u32,
    /// At most this many accounts (0 is taken as 1; capped at [`MAX_USER_PAGE`]).
    pub limit: u32,
}

impl UserSearch {
    /// The `LIKE` pattern (escape character `\\`) of a lower-cased substring match.
    pub(crate) fn like_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.text.len() + 2);
        pattern.push('%');
        for c in self.text.trim().to_lowercase().chars() {
            if matches!(c, '%' | '_' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('%');
        pattern
    }
}

/// A stored account with its roles.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// The stable id (JWT `sub`).
    pub id: UserId,
    /// The canonical (lower-cased) address.
    pub email: Email,
    /// The bcrypt hash; redacted from `Debug`.
    pub password_hash: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Whether the address has been confirmed.
    pub is_verified: bool,
    /// False once the account is deactivated; such accounts cannot log in.
    pub is_active: bool,
    /// Whether login requires a TOTP or recovery code.
    pub two_factor_enabled: bool,
    /// The encrypted TOTP secret; redacted from `Debug`.
    pub two_factor_secret: Option<Vec<u8>>,
    /// Failures counted by [`UserStore::record_failed_login`].
    pub failed_login_attempts: u32,
    /// Logins are refused until this instant, when set and in the future.
    pub locked_until: Option<DateTime<Utc>>,
    /// The last successful login.
    pub last_login: Option<DateTime<Utc>>,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
    /// When any column of the account last changed.
    pub updated_at: DateTime<Utc>,
    /// Role names, sorted.
    pub roles: Vec<String>,
    /// The language registered in (`ru`), for mails; `""` when not known.
    pub language: String,
}

impl User {
    /// The account `create_user` just inserted: unverified, active, no roles, no 2FA.
    pub(crate) fn created(id: UserId, new: NewUser, at: DateTime<Utc>) -> Self {
        Self {
            id,
            email: new.email,
            password_hash: new.password_hash,
            first_name: new.first_name,
            last_name: new.last_name,
            is_verified: false,
            is_active: true,
            two_factor_enabled: false,
            two_factor_secret: None,
            failed_login_attempts: 0,
            locked_until: None,
            last_login: None,
            created_at: at,
            updated_at: at,
            roles: Vec::new(),
            language: new.language,
        }
    }

    /// Whether a lockout is in force at `now`.
    pub fn is_locked(&self, now: DateTime<Utc>) -> bool {
        self.locked_until.is_some_and(|until| until > now)
    }

    /// Whether the account carries `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("password_hash", &"<redacted>")
            .field("first_name", &self.first_name)
            .field("last_name", &self.last_name)
            .field("is_verified", &self.is_verified)
            .field("is_active", &self.is_active)
            .field("two_factor_enabled", &self.two_factor_enabled)
            .field(
                "two_factor_secret",
                &self.two_factor_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("failed_login_attempts", &self.failed_login_attempts)
            .field("locked_until", &self.locked_until)
            .field("last_login", &self.last_login)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("roles", &self.roles)
            .field("language", &self.language)
            .finish()
    }
}

/// The outcome of counting one failed login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailedLogin {
    /// Failures counted so far, this one included.
    pub attempts: u32,
    /// The lock in force after this failure, if any.
    pub locked_until: Option<DateTime<Utc>>,
    /// True when this very failure started the lock (log and count it once).
    pub newly_locked: bool,
}

/// The answer to [`UserStore::claim_login_attempt`]: whether a password or code may be
/// checked now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptClaim {
    /// One guess may be checked; it is counted in flight until the caller resolves it
    /// ([`UserStore::resolve_login_attempt`]), or as wrong once [`IN_FLIGHT_GUESS_TTL`]
    /// passes without that.
    Granted {
        /// This guess's number in the current series: failures plus guesses in flight,
        /// this one included (1 = the first).
        attempt: u32,
        /// True when no further guess may be checked until this one (or another in
        /// flight) is resolved.
        last: bool,
    },
    /// Failures and guesses in flight fill the threshold, but no lock is in force: ask
    /// again once a guess in flight is resolved (a right one makes room, wrong ones lock).
    Busy,
    /// A lock is in force: nothing may be checked.
    Locked {
        /// When the lock ends.
        until: DateTime<Utc>,
    },
}

/// How a claimed guess ended ([`UserStore::resolve_login_attempt`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The password or code was wrong: one more failure, which may lock the account.
    Wrong,
    /// The caller proved who they are: the failures and any lock are cleared.
    Right,
    /// Not a guess after all (the password was right and the second factor simply not
    /// sent, or the account is deactivated): given back, nothing else changes.
    NotAGuess,
}

/// What changed about an account, as the change feed tells running gateways.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserChange {
    /// Roles, activation, verification or 2FA state changed: drop what is cached.
    Updated,
    /// As `Updated`, and every session of the account must end (an operator's
    /// deactivation or 2FA reset, which the in-process session store cannot see).
    SessionsEnded,
}

/// One entry of the account change feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserChangeEvent {
    /// The feed position (increasing, per database).
    pub id: i64,
    /// The account that changed.
    pub user_id: UserId,
    /// What the gateways must do about it.
    pub change: UserChange,
    /// When it was made, by the database's clock: sessions started after it are not ended.
    pub changed_at: DateTime<Utc>,
}

/// How far back [`UserStore::recent_user_changes`] looks: long enough to cover a commit
/// that becomes visible after a later one, and a few missed polls.
pub const USER_CHANGE_WINDOW: Duration = Duration::from_secs(10);
/// How long a claimed guess may stay unresolved before it counts as wrong: longer than
/// any bcrypt queue plus a second-factor check, short enough that a gateway that died
/// mid-check holds an account's guesses only briefly.
pub const IN_FLIGHT_GUESS_TTL: Duration = Duration::from_secs(30);
/// How long an unknown address's failure count is kept after its last guess.
pub const UNKNOWN_ATTEMPTS_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How long change-feed entries are kept before [`UserStore::purge_user_changes`] deletes them.
pub const USER_CHANGE_RETENTION: Duration = Duration::from_secs(600);

/// Persistent identity data. Every backend gives every method the same meaning;
/// `tests/contracts/store.rs` is the conformance suite that holds them to it.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates an account (unverified, active, no roles). [`StoreError::DuplicateEmail`]
    /// when the address is taken, whatever its case.
    async fn create_user(&self, new: NewUser) -> Result<User, StoreError>;
    /// Creates an account and its first mailed token (the address's verification) in one
    /// transaction: both are stored, or, on any failure, neither. Errors as
    /// [`create_user`](Self::create_user).
    async fn create_user_with_token(
        &self,
        new: NewUser,
        token: NewToken,
    ) -> Result<User, StoreError>;

    /// Creates an account an operator vouches for, in one transaction: its address counts
    /// as proven and `roles` (already checked as role names) are granted. Errors as
    /// [`create_user`](Self::create_user).
    async fn create_vouched_user(&self, new: NewUser, roles: &[String])
    -> Result<User, StoreError>;

    /// Deletes an account with its roles, mailed tokens, recovery codes and passkeys, revokes
    /// the address's pending invitations (one would bring the account back), and
    /// writes [`UserChange::SessionsEnded`] to the change feed in the same transaction, so
    /// every instance ends its sessions; `false` when there was no such account.
    async fn delete_user(&self, id: UserId) -> Result<bool, StoreError>;

    /// The account with this address, if any.
    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, StoreError>;

    /// The account with this id, if any.
    async fn find_by_id(&self, id: UserId) -> Result<Option<User>, StoreError>;

    /// Every account, oldest first (for the CLI; not for request paths).
    async fn list_users(&self) -> Result<Vec<User>, StoreError>;

    /// How many accounts there are, active or not (the `portcullis_users_registered`
    /// gauge; not for request paths).
    async fn count_users(&self) -> Result<u64, StoreError>;

    /// One page of accounts in address order: those whose address or names contain
    /// `search.text` (case-insensitive), skipping `search.offset`, at most `search.limit`
    /// (capped at [`MAX_USER_PAGE`]).
    async fn search_users(&self, search: &UserSearch) -> Result<Vec<User>, StoreError>;

    /// Changes the names given as `Some`; `None` when the user does not exist.
    async fn update_profile(
        &self,
        id: UserId,
        first_name: Option<String>,
        last_name: Option<String>,
    ) -> Result<Option<User>, StoreError>;

    /// Replaces the password hash.
    async fn set_password_hash(&self, id: UserId, password_hash: &str) -> Result<(), StoreError>;

    /// A password reset through a mailed link, in one transaction: replaces the password
    /// hash, marks the address verified (the link reached the mailbox) and clears the
    /// failures and any lock, so no failure leaves some of it done.
    ///
    /// When the address was unproven until now, whoever registered it first need not own
    /// the mailbox: the same transaction removes what they could have planted — the linked
    /// identities (and the roles `role_mapping` granted through them), the passkeys, the
    /// TOTP secret and the recovery codes — and appends [`UserChange::Updated`]. The
    /// answer says what went. The reset of an account whose address was proven removes
    /// none of it.
    async fn reset_password(
        &self,
        id: UserId,
        password_hash: &str,
    ) -> Result<PasswordReset, StoreError>;

    /// Records the language the user's mails go out in (a code such as `ru`).
    async fn set_language(&self, id: UserId, language: &str) -> Result<(), StoreError>;

    /// Marks the email address as confirmed.
    async fn mark_verified(&self, id: UserId) -> Result<(), StoreError>;

    /// Activates or deactivates the account.
    async fn set_active(&self, id: UserId, active: bool) -> Result<(), StoreError>;

    /// Counts one failed login, atomically (one conditional `UPDATE … RETURNING`), so
    /// failures arriving at the same moment on several gateway instances are all counted.
    ///
    /// The rule, evaluated against the row as it is when the update runs:
    /// - a lock that has expired (`locked_until <= now`) is forgotten with its count:
    ///   this failure is number 1 of a fresh series;
    /// - otherwise the count goes up by one;
    /// - when no lock is in force and the new count reaches `max_attempts`, the account is
    ///   locked until `now + lock_for` (`newly_locked` is then true);
    /// - failures while a lock is in force are counted but do not extend it, so an
    ///   attacker cannot keep an account locked forever.
    ///
    /// The count is kept after locking so the caller can log it; success and
    /// [`unlock`](Self::unlock) reset it.
    async fn record_failed_login(
        &self,
        id: UserId,
        max_attempts: u32,
        lock_for: Duration,
    ) -> Result<FailedLogin, StoreError>;

    /// Claims one guess at the account's password or second factor, before anything is
    /// checked, under the row's lock (one transaction); so however many requests arrive at
    /// once, on however many instances, failures plus guesses in flight never exceed
    /// `max_attempts`, and only guesses found wrong lock the account.
    ///
    /// - a lock that has expired is forgotten with its failures; claims in flight for
    ///   longer than [`IN_FLIGHT_GUESS_TTL`] are counted as wrong (which may lock);
    /// - a lock in force: nothing changes, [`AttemptClaim::Locked`];
    /// - failures plus guesses in flight at `max_attempts`: nothing changes,
    ///   [`AttemptClaim::Busy`] (ask again);
    /// - otherwise the guess is counted in flight, [`AttemptClaim::Granted`].
    ///
    /// [`StoreError::NotFound`] when the user does not exist.
    async fn claim_login_attempt(
        &self,
        id: UserId,
        max_attempts: u32,
        lock_for: Duration,
    ) -> Result<AttemptClaim, StoreError>;

    /// Resolves a guess granted by [`claim_login_attempt`](Self::claim_login_attempt):
    /// it leaves the in-flight count, and a [`AttemptOutcome::Wrong`] one is a failure
    /// that locks the account until `now + lock_for` when failures reach `max_attempts`
    /// (`newly_locked`); a [`AttemptOutcome::Right`] one clears failures and lock.
    async fn resolve_login_attempt(
        &self,
        id: UserId,
        outcome: AttemptOutcome,
        max_attempts: u32,
        lock_for: Duration,
    ) -> Result<FailedLogin, StoreError>;

    /// [`claim_login_attempt`](Self::claim_login_attempt) for an address with no account,
    /// keyed by `email_hash` (the SHA-256 hex of the canonical address), with the same rule
    /// and the same atomicity (its `Busy` included), so a run of guesses is answered alike,
    /// and as fast, whether or not the account exists. Nothing ever clears these counts but
    /// the lock rule and [`purge_unknown_login_attempts`](Self::purge_unknown_login_attempts).
    async fn claim_unknown_login_attempt(
        &self,
        email_hash: &str,
        max_attempts: u32,
        lock_for: Duration,
    ) -> Result<AttemptClaim, StoreError>;

    /// Resolves a guess granted by
    /// [`claim_unknown_login_attempt`](Self::claim_unknown_login_attempt) as wrong (there
    /// is no right password for an address with no account), as
    /// [`resolve_login_attempt`](Self::resolve_login_attempt) does.
    async fn resolve_unknown_login_attempt(
        &self,
        email_hash: &str,
        max_attempts: u32,
        lock_for: Duration,
    ) -> Result<FailedLogin, StoreError>;

    /// Deletes the unknown-address counts idle for [`UNKNOWN_ATTEMPTS_RETENTION`] and not
    /// locked; returns how many.
    async fn purge_unknown_login_attempts(&self) -> Result<u64, StoreError>;

    /// Resets the failure count, clears any lock and stamps `last_login`.
    async fn record_successful_login(&self, id: UserId) -> Result<(), StoreError>;

    /// Resets the failure count and clears any lock (operator action).
    async fn unlock(&self, id: UserId) -> Result<(), StoreError>;

    /// Grants a role; true when the user did not have it yet.
    async fn grant_role(&self, id: UserId, role: &str) -> Result<bool, StoreError>;

    /// Revokes a role; true when the user had it.
    async fn revoke_role(&self, id: UserId, role: &str) -> Result<bool, StoreError>;

    /// Enables 2FA with this (encrypted) secret, or disables it with `None`, which
    /// also deletes the recovery codes.
    async fn set_two_factor(&self, id: UserId, secret: Option<Vec<u8>>) -> Result<(), StoreError>;

    /// Replaces all recovery codes of the user with these hashes (duplicates collapse).
    async fn replace_recovery_codes(&self, id: UserId, hashes: &[String])
    -> Result<(), StoreError>;

    /// Uses up a recovery code: true exactly once per stored unused hash, even under
    /// concurrent attempts.
    async fn consume_recovery_code(&self, id: UserId, code_hash: &str) -> Result<bool, StoreError>;

    /// How many of the user's recovery codes are still unused (0 for an account without
    /// any, or without TOTP).
    async fn count_unused_recovery_codes(&self, id: UserId) -> Result<u64, StoreError>;

    /// Stores a mailed token by its SHA-256 hex hash.
    async fn create_token(
        &self,
        id: UserId,
        kind: TokenKind,
        token_hash: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Marks the user's unused tokens of `token.kind` as used and stores `token`, in one
    /// transaction: a failure leaves the earlier tokens working. [`StoreError::NotFound`]
    /// when the user does not exist.
    async fn replace_token(&self, id: UserId, token: NewToken) -> Result<(), StoreError>;

    /// Proves an address with its mailed [`TokenKind::EmailVerification`] token, in one
    /// transaction: uses the token up (as [`consume_token`](Self::consume_token)), marks
    /// its owner verified and appends [`UserChange::Updated`] to the change feed. The
    /// owner's id, or `None` (nothing changed) for an unknown, used or expired token.
    async fn verify_address(&self, token_hash: &str) -> Result<Option<UserId>, StoreError>;

    /// Uses up a token: the owner's id when the hash is known, of this kind, unused and
    /// unexpired, in which case it is now marked used (one conditional update, so two
    /// concurrent uses cannot both succeed); `None` otherwise.
    async fn consume_token(
        &self,
        kind: TokenKind,
        token_hash: &str,
    ) -> Result<Option<UserId>, StoreError>;

    /// The owner of a token that [`consume_token`](Self::consume_token) would accept now,
    /// without using it up (a reset's new password is checked against its account's
    /// address and names before the link is spent).
    async fn token_owner(
        &self,
        kind: TokenKind,
        token_hash: &str,
    ) -> Result<Option<UserId>, StoreError>;

    /// Marks every unused token of this kind of the user as used (e.g. after a new one
    /// is mailed, or the password changed); returns how many.
    async fn invalidate_tokens(&self, id: UserId, kind: TokenKind) -> Result<u64, StoreError>;

    /// Deletes every token whose expiry has passed, used or not; returns how many.
    /// Used tokens are kept until then, which costs little and keeps the table a record
    /// of recent mail.
    async fn purge_expired_tokens(&self) -> Result<u64, StoreError>;

    /// Deletes invitations that stopped working (expired, whether used, revoked or not) more
    /// than [`INVITATION_RETENTION`] ago; answers how many. The audit trail keeps their story.
    async fn purge_invitations(&self) -> Result<u64, StoreError>;

    /// Appends an entry to the account change feed that every running gateway follows.
    async fn record_user_change(&self, id: UserId, change: UserChange) -> Result<(), StoreError>;

    /// The change-feed entries of the last [`USER_CHANGE_WINDOW`] (by the database's
    /// clock), oldest first. Callers remember which ids they have applied.
    async fn recent_user_changes(&self) -> Result<Vec<UserChangeEvent>, StoreError>;

    /// Deletes change-feed entries older than [`USER_CHANGE_RETENTION`]; returns how many.
    async fn purge_user_changes(&self) -> Result<u64, StoreError>;

    /// Stores a newly registered passkey; `false` when its credential id is already
    /// registered (to any account).
    async fn add_passkey(&self, passkey: &StoredPasskey) -> Result<bool, StoreError>;

    /// The user's passkeys, oldest first.
    async fn list_passkeys(&self, user: UserId) -> Result<Vec<StoredPasskey>, StoreError>;

    /// The passkey with this credential id (base64url), whoever owns it.
    async fn find_passkey(&self, credential_id: &str) -> Result<Option<StoredPasskey>, StoreError>;

    /// Renames one of the user's passkeys; `false` when the user has no such key.
    async fn rename_passkey(
        &self,
        user: UserId,
        id: PasskeyId,
        name: &str,
    ) -> Result<bool, StoreError>;

    /// Deletes one of the user's passkeys; `false` when the user has no such key.
    async fn remove_passkey(&self, user: UserId, id: PasskeyId) -> Result<bool, StoreError>;

    /// Records an accepted use, only over the counter it was checked against: `false`
    /// when another use got there first (the caller refuses this one).
    async fn record_passkey_use(&self, used: &PasskeyUse) -> Result<bool, StoreError>;

    /// Stores an invitation and revokes the address's earlier pending ones, in one
    /// transaction (the newest link is the one that works).
    async fn create_invitation(&self, new: NewInvitation) -> Result<Invitation, StoreError>;

    /// Every invitation, newest first (for the CLI; not for request paths).
    async fn list_invitations(&self) -> Result<Vec<Invitation>, StoreError>;

    /// The invitation with this token hash while it can be used (unused, unrevoked,
    /// unexpired); `None` otherwise.
    async fn find_invitation(&self, token_hash: &str) -> Result<Option<Invitation>, StoreError>;

    /// Revokes the address's pending invitations; returns how many.
    async fn revoke_invitations(&self, email: &Email) -> Result<u64, StoreError>;

    /// Uses an invitation, in one transaction: claims it (one conditional update, so of two
    /// uses at once exactly one gets it) when it is usable and for `new.email`, then creates
    /// the account with its address proven and the invitation's roles. `None` (nothing
    /// written) when no usable invitation for that address has this hash; a taken address
    /// is [`StoreError::DuplicateEmail`] and leaves the invitation usable.
    async fn accept_invitation(
        &self,
        token_hash: &str,
        new: NewUser,
    ) -> Result<Option<User>, StoreError>;

    /// As [`UserStore::accept_invitation`], the account made with the id `passkey.user_id`
    /// and `passkey` as its first passkey, in the same transaction. `DuplicatePasskey` when
    /// the credential is registered already (nothing is written).
    async fn accept_invitation_with_passkey(
        &self,
        token_hash: &str,
        new: NewUser,
        passkey: &StoredPasskey,
    ) -> Result<Option<User>, StoreError>;

    /// Appends an event to the audit trail; the database stamps its id and time.
    async fn record_audit_event(&self, event: &NewAuditEvent) -> Result<(), StoreError>;

    /// The audit events `filter` selects, newest first (by id), at most `filter.limit`
    /// ([`MAX_AUDIT_PAGE`] at most): the next page passes the last id as `before_id`.
    async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError>;

    /// Deletes audit events older than `retention` by the database's clock; returns how many.
    async fn purge_audit_events(&self, retention: Duration) -> Result<u64, StoreError>;

    /// The account an external identity (provider id, subject) signs in to, if linked.
    async fn find_linked_user(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<UserId>, StoreError>;

    /// Links an external identity to an account; `false` when that (provider, subject) is
    /// already linked (to this account or another). Records the sign-in time as its first use.
    async fn link_identity(&self, identity: &NewLinkedIdentity) -> Result<bool, StoreError>;

    /// Creates an account signed up through a provider, with its identity linked, in one
    /// transaction; `verified` when the provider vouched for the address. The account has
    /// `password_hash` (a hash of a secret nobody holds). `DuplicateEmail` when the address
    /// has an account already.
    async fn create_linked_user(
        &self,
        new: NewUser,
        verified: bool,
        identity: &NewLinkedIdentity,
    ) -> Result<User, StoreError>;

    /// Applies `role_mapping` at a sign-in through the identity (`provider`, `subject`) of
    /// `user`, in one transaction: each role of `given` the account lacks is granted and
    /// recorded as mapped for that identity (one it already holds is never recorded); each
    /// role recorded as mapped that `given` no longer holds is taken back. Nothing else is
    /// touched: roles granted otherwise stay. Appends [`UserChange::Updated`] when the
    /// roles changed. An identity not linked to `user` changes nothing.
    async fn apply_role_mapping(
        &self,
        user: UserId,
        provider: &str,
        subject: &str,
        given: &[String],
    ) -> Result<MappedRoles, StoreError>;

    /// The identities linked to an account, oldest first.
    async fn linked_identities(&self, user: UserId) -> Result<Vec<LinkedIdentity>, StoreError>;

    /// Records a sign-in through a linked identity (its time and the address last asserted).
    async fn touch_linked_identity(
        &self,
        provider: &str,
        subject: &str,
        email: &str,
    ) -> Result<(), StoreError>;

    /// Detaches an identity from its account; `false` when it was not linked to `user`.
    async fn unlink_identity(
        &self,
        user: UserId,
        provider: &str,
        subject: &str,
    ) -> Result<bool, StoreError>;

    /// Checks that the database answers (for `/health`).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// How long a caller waits for a pooled connection before the store reports
/// [`StoreError::Unavailable`]; short, because a 503 now beats a hung login.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long SQLite waits for another writer before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the health check's probe waits for SQLite's write lock: writes hold it for
/// milliseconds, and `/health` gives a backend two seconds.
const SQLITE_HEALTH_BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// Opens the store named by `url` (`storage.url`, parsed at load) and brings its schema
/// up to date.
///
/// For SQLite, missing parent directories and the file are created, and the database
/// runs in WAL mode with foreign keys on and a busy timeout.
///
/// Call it on the long-lived tokio runtime that should own the database connections
/// (a multi-thread runtime, or one that keeps being driven): every later call is
/// run on that runtime whichever runtime it comes from, so connections are never tied
/// to a runtime that may be shut down.
pub async fn connect(
    url: &StorageUrl,
    max_connections: u32,
) -> Result<Arc<dyn UserStore>, StoreError> {
    let max_connections = max_connections.max(1);
    let inner: Arc<dyn UserStore> = match url {
        StorageUrl::Sqlite(url) => {
            Arc::new(SqlStore::<Sqlite>::connect(url, max_connections).await?)
        }
        StorageUrl::Postgres(url) => {
            Arc::new(SqlStore::<Postgres>::connect(url, max_connections).await?)
        }
    };
    Ok(Arc::new(runtime::OnRuntime::new(inner)?))
}

/// Applies pending migrations to the database named by `url` (`portcullis migrate`).
pub async fn migrate(url: &StorageUrl) -> Result<(), StoreError> {
    match url {
        StorageUrl::Sqlite(url) => SqlStore::<Sqlite>::migrate_only(url).await,
        StorageUrl::Postgres(url) => SqlStore::<Postgres>::migrate_only(url).await,
    }
}

/// How long an invitation is kept after its expiry, so the lists show what became of it.
pub const INVITATION_RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// Starts a task on `backend` (the runtime [`connect`] ran on, which owns the pool's
/// sockets) that deletes expired tokens, old invitations, idle unknown-address failure counts and audit
/// events older than `audit_retention` (`None` keeps them) every `every` (first run at
/// once; at least one second apart). Only counts are logged.
pub fn spawn_token_purger(
    backend: &crate::backend::Backend,
    store: Arc<dyn UserStore>,
    every: Duration,
    audit_retention: Option<Duration>,
) -> JoinHandle<()> {
    // interval() panics on zero; a purge more often than once a second is pointless anyway.
    let every = every.max(Duration::from_secs(1));
    backend.spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match store.purge_expired_tokens().await {
                Ok(0) => tracing::debug!("no expired verification tokens to purge"),
                Ok(purged) => tracing::info!(purged, "purged expired verification tokens"),
                Err(e) => tracing::warn!(error = %e, "purging expired verification tokens failed"),
            }
            match store.purge_invitations().await {
                Ok(purged) => tracing::debug!(purged, "purged old invitations"),
                Err(e) => tracing::warn!(error = %e, "purging old invitations failed"),
            }
            match store.purge_unknown_login_attempts().await {
                Ok(purged) => tracing::debug!(purged, "purged idle unknown-address failure counts"),
                Err(e) => {
                    tracing::warn!(error = %e, "purging unknown-address failure counts failed")
                }
            }
            if let Some(retention) = audit_retention {
                match store.purge_audit_events(retention).await {
                    Ok(purged) => tracing::debug!(purged, "purged old audit events"),
                    Err(e) => tracing::warn!(error = %e, "purging old audit events failed"),
                }
            }
        }
    })
}

/// The current instant at the precision both databases keep (microseconds), so a
/// value written and read back compares equal to the one the caller holds.
pub(crate) fn now() -> DateTime<Utc> {
    let now = Utc::now();
    now.duration_trunc(TimeDelta::microseconds(1))
        .unwrap_or(now)
}

/// `now + lock_for`, refusing durations that overflow the calendar.
pub(crate) fn lock_deadline(
    now: DateTime<Utc>,
    lock_for: Duration,
) -> Result<DateTime<Utc>, StoreError> {
    TimeDelta::from_std(lock_for)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .map(|t| t.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(t))
        .ok_or_else(|| StoreError::Other("lockout duration is out of range".into()))
}

/// Maps a driver error to the store's error, keeping the 503-worthy ones apart.
///
/// sqlx errors name the failure, never the bound parameters, so their text is safe to
/// carry; PostgreSQL's `detail` (which can quote a value) is not included.
pub(crate) fn map_sqlx(e: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    match e {
        E::PoolTimedOut => {
            StoreError::Unavailable("timed out waiting for a database connection".into())
        }
        E::PoolClosed => StoreError::Unavailable("the database pool is closed".into()),
        E::Io(e) => StoreError::Unavailable(format!("database connection failed: {e}")),
        E::Tls(e) => StoreError::Unavailable(format!("database TLS failed: {e}")),
        E::Protocol(m) => StoreError::Unavailable(format!("database protocol error: {m}")),
        E::WorkerCrashed => StoreError::Unavailable("the SQLite worker stopped".into()),
        E::BeginFailed => StoreError::Unavailable("could not begin a transaction".into()),
        E::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            if database_unavailable(&code) {
                StoreError::Unavailable(format!(
                    "database refused the request ({code}): {}",
                    db.message()
                ))
            } else {
                StoreError::Other(format!("database error ({code}): {}", db.message()))
            }
        }
        other => StoreError::Other(other.to_string()),
    }
}

/// Error codes that mean "try again later" rather than "this request is wrong": the
/// database could not take the write (resources, I/O, locks, shutdown, a read-only or
/// damaged file) or a trigger refused it (nothing the request can change). Either way the
/// answer is 503, never a 500, which stays for the gateway's own bugs.
fn database_unavailable(code: &str) -> bool {
    if code.len() == 5 {
        // A PostgreSQL SQLSTATE: class 08 connection exception, 53 insufficient resources
        // (53100 disk_full), 57 operator intervention (57P01 admin_shutdown, 57014
        // query_canceled), 58 system error (58030 io_error), 25006 read-only transaction,
        // 55P03 lock not available, 40001/40P01 serialization failure / deadlock (the
        // statement may simply be retried), P0001 an exception raised by a trigger.
        ["08", "53", "57", "58"]
            .iter()
            .any(|class| code.starts_with(class))
            || matches!(code, "25006" | "55P03" | "40001" | "40P01" | "P0001")
    } else {
        // A SQLite extended result code, which carries the primary one in the low byte:
        // SQLITE_NOMEM 7, SQLITE_BUSY 5, SQLITE_LOCKED 6, SQLITE_READONLY 8, SQLITE_IOERR 10,
        // SQLITE_CORRUPT 11, SQLITE_FULL 13, SQLITE_CANTOPEN 14, SQLITE_PROTOCOL 15,
        // SQLITE_NOTADB 26; and SQLITE_CONSTRAINT_TRIGGER 1811 (a trigger's RAISE).
        code.parse::<i32>().is_ok_and(|c| {
            c == SQLITE_CONSTRAINT_TRIGGER || matches!(c & 0xff, 5..=8 | 10 | 11 | 13..=15 | 26)
        })
    }
}

/// SQLite's extended code for an error a trigger raised (`RAISE(ABORT | FAIL | ROLLBACK, …)`).
const SQLITE_CONSTRAINT_TRIGGER: i32 = 19 | (7 << 8);

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        map_sqlx(e)
    }
}

/// Maps a migration failure; a database that cannot be reached stays `Unavailable`.
pub(crate) fn map_migrate(e: sqlx::migrate::MigrateError) -> StoreError {
    use sqlx::migrate::MigrateError as M;
    match e {
        M::Execute(e) => map_sqlx(e),
        other => StoreError::Other(format!("database migration failed: {other}")),
    }
}

/// The answer for a store failure: 503 when the database is down, 409 for a taken email,
/// 500 (logged) for a bug.
impl From<StoreError> for Reply {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "user store unavailable");
                Reply::unavailable("account database")
            }
            StoreError::DuplicateEmail => Reply::error(
                http::StatusCode::CONFLICT,
                "email_taken",
                "An account with this email address already exists.",
            ),
            StoreError::DuplicatePasskey => Reply::error(
                http::StatusCode::CONFLICT,
                "passkey_already_registered",
                "This passkey is already registered.",
            ),
            StoreError::NotFound => Reply::error(
                http::StatusCode::UNAUTHORIZED,
                "invalid_token",
                "The account no longer exists.",
            ),
            other => Reply::internal("user store", &other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_user() -> User {
        User {
            id: UserId::random(),
            email: Email::parse("a@example.com").unwrap(),
            password_hash: "$2b$12$secrethashvalue".into(),
            first_name: "A".into(),
            last_name: "B".into(),
            is_verified: true,
            is_active: true,
            two_factor_enabled: true,
            two_factor_secret: Some(b"ciphertext-bytes".to_vec()),
            failed_login_attempts: 0,
            locked_until: None,
            last_login: None,
            created_at: now(),
            updated_at: now(),
            roles: vec!["admin".into()],
            language: "en".into(),
        }
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let user = sample_user();
        let debug = format!("{user:?}");
        assert!(!debug.contains("secrethashvalue"), "{debug}");
        assert!(!debug.contains("ciphertext"), "{debug}");
        assert!(!debug.contains("99, 105, 112"), "{debug}"); // "cip" as bytes
        assert!(debug.contains("a@example.com"), "{debug}");
        assert!(
            debug.contains("two_factor_secret: Some(\"<redacted>\")"),
            "{debug}"
        );

        let new = NewUser {
            email: user.email.clone(),
            password_hash: user.password_hash.clone(),
            first_name: String::new(),
            last_name: String::new(),
            language: String::new(),
        };
        assert!(!format!("{new:?}").contains("secrethashvalue"));
    }

    #[test]
    fn lock_is_in_force_only_before_its_end() {
        let t = now();
        let mut user = sample_user();
        assert!(!user.is_locked(t));
        user.locked_until = Some(t + TimeDelta::minutes(1));
        assert!(user.is_locked(t));
        assert!(!user.is_locked(t + TimeDelta::minutes(1)));
        assert!(!user.is_locked(t + TimeDelta::minutes(2)));
        assert!(user.has_role("admin"));
        assert!(!user.has_role("Admin"));
    }

    #[test]
    fn lock_deadline_rejects_overflow() {
        assert!(lock_deadline(now(), Duration::from_secs(900)).is_ok());
        assert!(lock_deadline(now(), Duration::MAX).is_err());
    }

    #[test]
    fn classifies_unavailable_codes() {
        assert!(database_unavailable("08006"));
        assert!(database_unavailable("57P01"));
        assert!(database_unavailable("53300"));
        assert!(database_unavailable("5")); // SQLITE_BUSY
        assert!(database_unavailable("517")); // SQLITE_BUSY_SNAPSHOT
        assert!(database_unavailable("53100")); // disk_full
        assert!(database_unavailable("58030")); // io_error
        assert!(database_unavailable("25006")); // read_only_sql_transaction
        assert!(database_unavailable("P0001")); // raised by a trigger
        assert!(database_unavailable("13")); // SQLITE_FULL
        assert!(database_unavailable("266")); // SQLITE_IOERR_READ
        assert!(database_unavailable("1032")); // SQLITE_READONLY_DBMOVED
        assert!(database_unavailable("1811")); // SQLITE_CONSTRAINT_TRIGGER
        assert!(!database_unavailable("23505"));
        assert!(!database_unavailable("42601")); // syntax_error: a bug
        assert!(!database_unavailable("2067")); // SQLITE_CONSTRAINT_UNIQUE
        assert!(!database_unavailable("787")); // SQLITE_CONSTRAINT_FOREIGNKEY
        assert!(!database_unavailable("1")); // SQLITE_ERROR
        assert!(!database_unavailable(""));
    }
}
