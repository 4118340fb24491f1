//! Server-side sessions: the record a JWT's `sid` points at, so a logout, eviction or
//! refresh-token reuse ends access at once even though the JWT itself is still valid.
//!
//! `sessions.url` picks the backend: `memory://` keeps everything in this process (one
//! instance), `redis://` / `rediss://` shares it between every gateway instance.

mod memory;
mod redis;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::broadcast;

use crate::config::{SessionBackend, SessionsConfig};
use crate::domain::UserId;
use crate::reply::Reply;

pub use self::memory::MemorySessionStore;
pub use self::redis::RedisSessionStore;

/// Opens the session store named by `sessions.url`.
///
/// Call it inside the long-lived runtime that should own the store's connections and
/// background tasks; the store may then be used from any other runtime. It never fails
/// because Redis is down: calls answer [`SessionError::Unavailable`] until it is back.
pub async fn connect(config: &SessionsConfig) -> Result<Arc<dyn SessionStore>, SessionError> {
    match config.backend() {
        Ok(SessionBackend::Memory) => Ok(Arc::new(MemorySessionStore::new())),
        Ok(SessionBackend::Redis(url)) => Ok(Arc::new(
            RedisSessionStore::connect(url, &config.key_prefix).await?,
        )),
        Err(message) => Err(SessionError::InvalidConfig(format!(
            "sessions.url: {message}"
        ))),
    }
}

/// The storage seam for sessions, one-time claims and revocation events.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Starts a session; ends the user's oldest ones so at most `max_per_user` stay live.
    async fn create(&self, new: NewSession) -> Result<CreatedSession, SessionError>;

    /// The live session with this id; `None` once it expired or was revoked.
    async fn get(&self, id: &SessionId) -> Result<Option<Session>, SessionError>;

    /// What the per-request check needs of the live session with this id (see
    /// [`SessionLiveness`]); `None` exactly when [`get`](Self::get) would answer `None`.
    /// Stores override it to read less than the whole record.
    async fn liveness(&self, id: &SessionId) -> Result<Option<SessionLiveness>, SessionError> {
        Ok(self.get(id).await?.map(|s| SessionLiveness {
            user_id: s.user_id,
            two_factor: s.two_factor,
            last_seen_at: s.last_seen_at,
        }))
    }

    /// Records activity at `now`: slides `expires_at` (never past `absolute_expires_at`).
    /// Returns `false` when the session is gone.
    async fn touch(&self, id: &SessionId, now: DateTime<Utc>) -> Result<bool, SessionError>;

    /// Swaps the refresh-token hash atomically and detects reuse of an old one.
    async fn rotate_refresh(
        &self,
        id: &SessionId,
        presented_hash: &str,
        new_hash: &str,
        grace: Duration,
    ) -> Result<RotateOutcome, SessionError>;

    /// Ends one session; `false` when it was already gone.
    async fn revoke(&self, id: &SessionId) -> Result<bool, SessionError>;

    /// Records that a second factor was proven in the live session `id` at `at` (a step-up):
    /// sets [`Session::second_factor_at`] and [`Session::auth_time`] (a second factor is a
    /// proof of identity too) and marks the session as having passed a second factor.
    /// Answers `false` when the session is gone.
    async fn prove_second_factor(
        &self,
        id: &SessionId,
        at: DateTime<Utc>,
    ) -> Result<bool, SessionError>;

    /// Records that the user proved who they are again in the live session `id` at `at` (a
    /// reauthentication: a password, with the second factor the account has, or a passkey):
    /// sets [`Session::auth_time`] and nothing else. Answers `false` when the session is gone.
    async fn prove_identity(&self, id: &SessionId, at: DateTime<Utc>)
    -> Result<bool, SessionError>;

    /// Ends every live session of a user except `except`; returns the ids it ended.
    async fn revoke_all(
        &self,
        user_id: UserId,
        except: Option<&SessionId>,
    ) -> Result<Vec<SessionId>, SessionError>;

    /// The user's live sessions, newest first.
    async fn list(&self, user_id: UserId) -> Result<Vec<Session>, SessionError>;

    /// `true` the first time `key` is claimed within `ttl` (one-time codes, replay guards),
    /// across every instance sharing the store.
    async fn claim_once(&self, key: &str, ttl: Duration) -> Result<bool, SessionError>;

    /// Keeps `value` under `key` for `ttl` (the state of a WebAuthn ceremony), visible to
    /// every instance sharing the store; replaces what was there.
    async fn stash(&self, key: &str, value: &str, ttl: Duration) -> Result<(), SessionError>;

    /// Takes back what [`SessionStore::stash`] kept under `key`, at most once across every
    /// instance: the value is gone once read. `None` when it expired, was taken or never was.
    async fn take_stash(&self, key: &str) -> Result<Option<String>, SessionError>;

    /// How many sessions are live, on every instance sharing the store (the
    /// `portcullis_sessions_active` gauge). Called every few seconds, never per request:
    /// each store answers from what it already keeps, without reading every record.
    async fn count_live(&self) -> Result<u64, SessionError>;

    /// Checks that the backend answers, for `/health`.
    async fn ping(&self) -> Result<(), SessionError>;

    /// Revocations from every instance (this one included), for caches of session liveness.
    fn revocations(&self) -> broadcast::Receiver<Revocation>;

    /// A short backend name for logs and `/health` (`"memory"`, `"redis"`).
    fn backend(&self) -> &'static str;
}

/// Why a session-store call failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The backend cannot be reached or did not answer in time (maps to 503).
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// `sessions.*` cannot be used as given.
    #[error("invalid session store configuration: {0}")]
    InvalidConfig(String),
    /// A stored record could not be read back (written by something else, or a bug).
    #[error("corrupt session record: {0}")]
    Corrupt(String),
    /// A session with this id already exists (ids must come from [`SessionId::generate`]).
    #[error("a session with this id already exists")]
    Duplicate,
}

/// A session's id: 128 random bits, written as 32 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId([u8; 16]);

impl SessionId {
    /// A fresh id from the operating system-seeded CSPRNG.
    pub fn generate() -> Self {
        Self(rand::random())
    }

    /// The raw 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

/// The text was not a session id (32 lowercase hex characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a session id: expected 32 lowercase hex characters")]
pub struct InvalidSessionId;

impl FromStr for SessionId {
    type Err = InvalidSessionId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only the canonical spelling, so an id string maps to exactly one key.
        if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(InvalidSessionId);
        }
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| InvalidSessionId)?;
        Ok(Self(bytes))
    }
}

impl Serialize for SessionId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One login's server-side state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The id the access token's `sid` claim carries.
    pub id: SessionId,
    /// The account this session belongs to.
    pub user_id: UserId,
    /// When the login happened.
    pub created_at: DateTime<Utc>,
    /// The latest recorded activity (touch or refresh).
    pub last_seen_at: DateTime<Utc>,
    /// When the session ends unless activity slides it further.
    pub expires_at: DateTime<Utc>,
    /// The hard end: sliding never moves `expires_at` past it.
    pub absolute_expires_at: DateTime<Utc>,
    /// The client address at login.
    pub ip: String,
    /// The `User-Agent` at login.
    pub user_agent: String,
    /// The login passed a second factor.
    pub two_factor: bool,
    /// When a second factor (a TOTP or recovery code, or a passkey) was last proven in this
    /// session: at login, or later by a step-up ([`SessionStore::prove_second_factor`]);
    /// `None` when never. The admin API and console ask it to be recent (`admin.max_auth_age`).
    pub second_factor_at: Option<DateTime<Utc>>,
    /// When the user last proved who they are in this session (a route's `max_auth_age`
    /// asks it to be recent): the sign-in, a reauthentication
    /// ([`SessionStore::prove_identity`]) or a step-up; a refresh keeps it. A federated
    /// sign-in's is the provider's `auth_time` when it gave a sane one. A record written
    /// before this field existed reads it as `created_at`.
    pub auth_time: DateTime<Utc>,
    /// Whether, and how, a passkey took part in the login.
    pub passkey: PasskeyUse,
    /// The identity provider (its `[[identity_providers]]` `id`) the session was opened
    /// through; `None` for a local sign-in. Such a session claims no password in its `amr`,
    /// and its second factor for the admin console and API is only ever a local step-up.
    pub provider: Option<String>,
    /// The user asked to stay logged in (the longer refresh lifetime applies).
    pub remember_me: bool,
    /// The refresh-token chain.
    pub refresh: RefreshState,
}

/// The part of a live [`Session`] the per-request check reads: whose it is, whether it
/// passed a second factor, and when it was last seen (to slide its expiry now and then).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLiveness {
    /// The account the session belongs to.
    pub user_id: UserId,
    /// The login passed a second factor.
    pub two_factor: bool,
    /// The latest recorded activity.
    pub last_seen_at: DateTime<Utc>,
}

/// The refresh-token chain of a session, stored as hashes only.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshState {
    /// Hash of the refresh token that is valid now.
    pub current_hash: String,
    /// Hash of the token it replaced; presenting it again is reuse (or a concurrent refresh).
    pub previous_hash: Option<String>,
    /// When the latest rotation happened (the start of the grace window).
    pub rotated_at: Option<DateTime<Utc>>,
    /// How many rotations happened; 0 right after login.
    pub generation: u64,
}

impl fmt::Debug for RefreshState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshState")
            .field("current_hash", &Redacted(&self.current_hash))
            .field(
                "previous_hash",
                &self.previous_hash.as_deref().map(Redacted),
            )
            .field("rotated_at", &self.rotated_at)
            .field("generation", &self.generation)
            .finish()
    }
}

/// Shows only a short prefix of a hash: enough to tell two apart in a log, useless to an attacker.
struct Redacted<'a>(&'a str);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix: String = self.0.chars().take(6).collect();
        write!(f, "\"{prefix}…\"")
    }
}

/// What [`SessionStore::create`] needs to start a session.
#[derive(Clone)]
pub struct NewSession {
    /// A fresh id from [`SessionId::generate`] (chosen by the caller so it can go into tokens).
    pub id: SessionId,
    /// The account logging in.
    pub user_id: UserId,
    /// The client address.
    pub ip: String,
    /// The client's `User-Agent`.
    pub user_agent: String,
    /// The login passed a second factor.
    pub two_factor: bool,
    /// Whether, and how, a passkey took part in the login.
    pub passkey: PasskeyUse,
    /// The identity provider the login went through (`None`: a local sign-in).
    pub provider: Option<String>,
    /// When the user proved who they are, when that was before the session starts (a
    /// provider's `auth_time`); `None` for now. A time after the start is taken as the start.
    pub auth_time: Option<DateTime<Utc>>,
    /// The user asked to stay logged in.
    pub remember_me: bool,
    /// Hash (hex) of the first refresh token.
    pub refresh_hash: String,
    /// The sliding window: activity keeps the session alive this long.
    pub idle_ttl: Duration,
    /// The hard lifetime from creation (the refresh-token lifetime); sliding never passes it.
    pub absolute_ttl: Duration,
    /// At most this many live sessions per user (`sessions.max_per_user`); the oldest are
    /// ended to make room.
    pub max_per_user: usize,
}

impl fmt::Debug for NewSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSession")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("ip", &self.ip)
            .field("user_agent", &self.user_agent)
            .field("two_factor", &self.two_factor)
            .field("passkey", &self.passkey)
            .field("provider", &self.provider)
            .field("auth_time", &self.auth_time)
            .field("remember_me", &self.remember_me)
            .field("refresh_hash", &Redacted(&self.refresh_hash))
            .field("idle_ttl", &self.idle_ttl)
            .field("absolute_ttl", &self.absolute_ttl)
            .field("max_per_user", &self.max_per_user)
            .finish()
    }
}

impl NewSession {
    /// The session this starts at `now`: alive for the idle window, never past the absolute one.
    fn start(self, now: DateTime<Utc>) -> Session {
        let absolute_expires_at = add(now, self.absolute_ttl);
        Session {
            id: self.id,
            user_id: self.user_id,
            created_at: now,
            last_seen_at: now,
            expires_at: add(now, self.idle_ttl).min(absolute_expires_at),
            absolute_expires_at,
            ip: self.ip,
            user_agent: self.user_agent,
            two_factor: self.two_factor,
            // A provider's word may pass `two_factor` routes (`trust_provider_mfa`), but the
            // admin console and API take only a factor proven here, by a step-up.
            second_factor_at: (self.two_factor && self.provider.is_none()).then_some(now),
            auth_time: self
                .auth_time
                .map_or(now, |at| truncate_micros(at).min(now)),
            passkey: self.passkey,
            provider: self.provider,
            remember_me: self.remember_me,
            refresh: RefreshState {
                current_hash: self.refresh_hash,
                previous_hash: None,
                rotated_at: None,
                generation: 0,
            },
        }
    }
}

/// Whether, and how, a passkey (WebAuthn) took part in a session's login; the access
/// token's `amr` (RFC 8176) follows from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PasskeyUse {
    /// No passkey: a password, perhaps with a TOTP or recovery code.
    #[default]
    None,
    /// A password, then a passkey as the second factor (`amr` `pwd`, `hwk`).
    SecondFactor,
    /// A passkey alone, with user verification on the authenticator (`amr` `hwk`, `mfa`).
    Passwordless,
}

impl PasskeyUse {
    /// How the Redis store writes it (`""` for none).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::None => "",
            Self::SecondFactor => "second_factor",
            Self::Passwordless => "passwordless",
        }
    }

    /// Reads what [`PasskeyUse::as_str`] wrote; anything else is no passkey.
    pub(crate) fn from_stored(value: &str) -> Self {
        match value {
            "second_factor" => Self::SecondFactor,
            "passwordless" => Self::Passwordless,
            _ => Self::None,
        }
    }
}

/// A new session and the older ones it pushed out (to log as "session evicted").
#[derive(Clone, Debug)]
pub struct CreatedSession {
    /// The session just created.
    pub session: Session,
    /// The user's sessions ended to stay within the cap, oldest first.
    pub evicted: Vec<SessionId>,
}

/// The result of presenting a refresh token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The presented hash was current: it is now previous and `new_hash` is current.
    Rotated(Session),
    /// A concurrent refresh of the same token already rotated to the same `new_hash`
    /// within the grace window: answer with the same new token.
    AlreadyRotated(Session),
    /// A token that was once valid came back: the session has been revoked (theft detection).
    Reused {
        /// Whose session it was, for the security log.
        user_id: UserId,
    },
    /// No live session with this id, or the hash was never one of its tokens.
    NotFound,
}

/// A revocation event, so caches of session liveness can drop what they hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// This session ended (logout, eviction, reuse).
    Session(SessionId),
    /// Every session of this user ended.
    User(UserId),
    /// Events may have been missed (the subscription was re-established): drop everything.
    All,
}

/// Whether a rotation request is well formed: hashes are hex, so a new one is never empty
/// and neither contains the separator the Redis store keeps retired hashes with.
fn hashes_acceptable(presented: &str, new: &str) -> bool {
    !new.is_empty() && !presented.contains(',') && !new.contains(',')
}

/// The hard upper bound for any TTL, so timestamp arithmetic can never overflow.
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Microseconds of a duration, capped at [`MAX_TTL`].
fn micros(d: Duration) -> i64 {
    i64::try_from(d.min(MAX_TTL).as_micros()).unwrap_or(i64::MAX)
}

/// `ts` truncated to whole microseconds, the precision both backends store.
fn truncate_micros(ts: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(ts.timestamp_micros()).unwrap_or(ts)
}

/// The current time at stored precision.
fn now_micros() -> DateTime<Utc> {
    truncate_micros(Utc::now())
}

/// `ts + d` (d capped at [`MAX_TTL`]), saturating at the end of representable time.
fn add(ts: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    ts.checked_add_signed(chrono::TimeDelta::microseconds(micros(d)))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The answer for a session store failure: 503 when it is down, 500 (logged) for a bug.
impl From<SessionError> for Reply {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Unavailable(cause) => {
                tracing::warn!(%cause, "session store unavailable");
                Reply::unavailable("session database")
            }
            other => Reply::internal("session store", &other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_id_round_trips_through_text() {
        let id = SessionId::generate();
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<SessionId>(), Ok(id));
    }

    #[test]
    fn session_ids_differ() {
        assert_ne!(SessionId::generate(), SessionId::generate());
    }

    #[test]
    fn session_id_rejects_non_canonical_text() {
        for bad in [
            "",
            "abc",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789ABCDEF0123456789abcdef",
            "0123456789abcdef0123456789abcdeg",
            "0123456789abcdef0123456789abcd\u{e9}",
        ] {
            assert_eq!(bad.parse::<SessionId>(), Err(InvalidSessionId), "{bad:?}");
        }
    }

    #[test]
    fn session_id_serializes_as_its_text() {
        let id = SessionId::generate();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<SessionId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<SessionId>("\"nope\"").is_err());
    }

    #[test]
    fn debug_does_not_print_hashes() {
        let current = "a".repeat(64);
        let previous = "b".repeat(64);
        let refresh = RefreshState {
            current_hash: current.clone(),
            previous_hash: Some(previous.clone()),
            rotated_at: None,
            generation: 1,
        };
        let text = format!("{refresh:?}");
        assert!(!text.contains(&current[..16]), "{text}");
        assert!(!text.contains(&previous[..16]), "{text}");

        let new = NewSession {
            id: SessionId::generate(),
            user_id: UserId::random(),
            ip: "127.0.0.1".into(),
            user_agent: "test".into(),
            two_factor: false,
            passkey: PasskeyUse::None,
            provider: None,
            auth_time: None,
            remember_me: false,
            refresh_hash: current.clone(),
            idle_ttl: Duration::from_secs(60),
            absolute_ttl: Duration::from_secs(60),
            max_per_user: 5,
        };
        let text = format!("{new:?}");
        assert!(!text.contains(&current[..16]), "{text}");
    }

    #[test]
    fn add_saturates() {
        let now = Utc::now();
        assert_eq!(
            add(now, Duration::from_secs(1)),
            now + chrono::TimeDelta::seconds(1)
        );
        assert!(add(DateTime::<Utc>::MAX_UTC, Duration::from_secs(1)) == DateTime::<Utc>::MAX_UTC);
        assert!(add(now, Duration::MAX) > now);
    }
}
