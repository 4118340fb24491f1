//! The decision on every proxied request: a verified access token whose session is live.
//!
//! This is the hot path, so it is built from three bounded in-process caches:
//!
//! - verified tokens (signature checks are the expensive part; a token's claims never change,
//!   so a verified token stays verified until it expires);
//! - live sessions, for at most [`SESSION_CACHE_TTL`] — and dropped at once when a revocation
//!   event arrives (local, or from another instance through Redis pub/sub). The TTL is the
//!   backstop for a missed event, so a revocation anywhere holds everywhere within 1 s;
//! - users (email, roles, active and verified flags), for at most [`USER_CACHE_TTL`], dropped on
//!   revocation of the user's sessions and when the account change feed names the user
//!   (an operator's role grant, deactivation or 2FA reset; polled every
//!   [`USER_CHANGE_POLL`]), so such a change holds everywhere within a second. Only a miss
//!   reads the database.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use http::HeaderValue;
use moka::sync::Cache;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::auth::jwt::{AccessClaims, KeyRing};
use crate::backend::Backend;
use crate::domain::UserId;
use crate::session::{Revocation, SessionError, SessionId, SessionStore};
use crate::store::{StoreError, User, UserChange, UserChangeEvent, UserStore};

/// Longest a live session is believed without asking the session store again.
pub const SESSION_CACHE_TTL: Duration = Duration::from_millis(900);
/// Longest a user's email, roles and active flag are believed without reading the store.
pub const USER_CACHE_TTL: Duration = Duration::from_secs(30);
/// Longest a verified token is remembered (it is also never used past its `exp`).
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(60);
/// Activity closer together than this does not slide a session's expiry again.
pub(crate) const TOUCH_INTERVAL_SECS: i64 = 60;
/// How long an identity assertion is signed for; upstreams see at least half of it left.
pub const ASSERTION_TTL: Duration = Duration::from_secs(60);
/// How often the account change feed is read: with the read itself, a change reaches
/// every instance well within a second.
pub const USER_CHANGE_POLL: Duration = Duration::from_millis(250);
/// Change-feed entries older than the retention are purged every this many polls (a minute).
const PURGE_EVERY_POLLS: u32 = 240;
/// Entries per cache: bounded memory whatever the traffic.
const CACHE_CAPACITY: u64 = 100_000;

/// Why a request was not let through; the label is the metric reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// No bearer token and no session cookie.
    NoCredentials,
    /// The token is malformed, forged, expired or for another issuer.
    BadToken,
    /// The token is fine but its session is gone (logout, eviction, expiry, revocation).
    SessionEnded,
    /// The account was deactivated.
    Deactivated,
    /// The session store or user store cannot be asked: fail closed.
    BackendDown,
}

impl Denial {
    /// The fixed label used in metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NoCredentials => "no_credentials",
            Self::BadToken => "bad_token",
            Self::SessionEnded => "session_ended",
            Self::Deactivated => "session_ended",
            Self::BackendDown => "backend_down",
        }
    }
}

/// Who a request comes from, once checked: shares the cached token and user, so building
/// one per request allocates nothing.
#[derive(Clone, Debug)]
pub struct Principal {
    token: Arc<VerifiedToken>,
    user: Arc<KnownUser>,
    /// The session passed a second factor.
    two_factor: bool,
}

impl Principal {
    /// When the access token stops being accepted: its `exp`, Unix seconds, exclusive
    /// (RFC 7519 §4.1.4).
    pub fn expires_at(&self) -> i64 {
        self.token.claims.exp
    }

    /// The account the token speaks for (its `sub`, parsed).
    pub fn user_id(&self) -> UserId {
        self.token.user_id
    }

    /// The session the token belongs to (its `sid`, parsed).
    pub fn session_id(&self) -> SessionId {
        self.token.session_id
    }

    /// The user id as text (the token's `sub`).
    pub fn user_id_text(&self) -> &str {
        &self.token.claims.sub
    }

    /// The session id as text (the token's `sid`).
    pub fn session_id_text(&self) -> &str {
        &self.token.claims.sid
    }

    /// The account's email address as stored (normalised when it was written).
    pub fn email(&self) -> &str {
        &self.user.email
    }

    /// The account's role names, in stored order; empty when it has none.
    pub fn roles(&self) -> &[String] {
        &self.user.roles
    }

    /// Whether the user proved they own their email address.
    pub fn email_verified(&self) -> bool {
        self.user.email_verified
    }

    /// Whether the session passed a second factor.
    pub fn two_factor(&self) -> bool {
        self.two_factor
    }

    /// When the user last proved who they are in the session, Unix seconds: the token's
    /// `auth_time`, or its `iat` when it has none (signed before the claim existed).
    pub fn auth_time(&self) -> i64 {
        self.token.claims.proven_at()
    }

    /// The identity header values, built once per token and per user.
    pub fn header_values(&self) -> IdentityValues<'_> {
        IdentityValues {
            user_id: &self.token.user_id_value,
            email: &self.user.email_value,
            roles: &self.user.roles_value,
            session_id: &self.token.session_id_value,
            email_verified: if self.user.email_verified {
                &VERIFIED_TRUE
            } else {
                &VERIFIED_FALSE
            },
        }
    }
}

/// The values of the identity headers for one principal.
pub struct IdentityValues<'a> {
    /// The user id, hyphenated UUID (the token's `sub`).
    pub user_id: &'a HeaderValue,
    /// The account's email address.
    pub email: &'a HeaderValue,
    /// Roles joined with commas.
    pub roles: &'a HeaderValue,
    /// The session id, 32 lower-case hex characters (the token's `sid`).
    pub session_id: &'a HeaderValue,
    /// `true` or `false`.
    pub email_verified: &'a HeaderValue,
}

static VERIFIED_TRUE: HeaderValue = HeaderValue::from_static("true");
static VERIFIED_FALSE: HeaderValue = HeaderValue::from_static("false");

/// A token whose signature, issuer and expiry were checked, with its ids parsed.
#[derive(Debug)]
struct VerifiedToken {
    /// The [`KeyRing::serial`] of the ring that verified (or signed) it.
    ring: u64,
    claims: AccessClaims,
    user_id: UserId,
    session_id: SessionId,
    user_id_value: HeaderValue,
    session_id_value: HeaderValue,
}

impl VerifiedToken {
    fn new(claims: AccessClaims, ring: u64) -> Option<Self> {
        Some(Self {
            ring,
            user_id: Uuid::parse_str(&claims.sub).ok().map(UserId::from_uuid)?,
            session_id: claims.sid.parse().ok()?,
            user_id_value: HeaderValue::from_str(&claims.sub).ok()?,
            session_id_value: HeaderValue::from_str(&claims.sid).ok()?,
            claims,
        })
    }
}

#[derive(Clone, Debug)]
struct LiveSession {
    user_id: UserId,
    two_factor: bool,
}

#[derive(Debug)]
struct KnownUser {
    email: String,
    roles: Vec<String>,
    email_value: HeaderValue,
    roles_value: HeaderValue,
    email_verified: bool,
    is_active: bool,
}

impl KnownUser {
    /// The cached form of an account; `None` (logged) when its email or roles cannot be
    /// header values. Emails and role names are checked when written, so that is a damaged
    /// record, not a reason to forward without identity.
    fn of(user: User) -> Option<Self> {
        let email = user.email.into_string();
        let roles_joined = user.roles.join(",");
        let (Ok(email_value), Ok(roles_value)) = (
            HeaderValue::from_str(&email),
            HeaderValue::from_str(&roles_joined),
        ) else {
            tracing::error!(user_id = %user.id, "stored email or roles cannot be sent as a header");
            return None;
        };
        Some(Self {
            email,
            roles: user.roles,
            email_value,
            roles_value,
            email_verified: user.is_verified,
            is_active: user.is_active,
        })
    }
}

/// The caches and the logic of the per-request check.
pub struct Gatekeeper {
    tokens: Cache<String, Arc<VerifiedToken>>,
    sessions: Cache<SessionId, LiveSession>,
    users: Cache<UserId, Arc<KnownUser>>,
    /// Signed identity assertions, re-signed when half their lifetime is gone.
    assertions: Cache<SessionId, HeaderValue>,
}

impl Default for Gatekeeper {
    fn default() -> Self {
        Self::new()
    }
}

impl Gatekeeper {
    /// Empty caches.
    pub fn new() -> Self {
        Self {
            tokens: Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(TOKEN_CACHE_TTL)
                .build(),
            sessions: Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(SESSION_CACHE_TTL)
                .build(),
            users: Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(USER_CACHE_TTL)
                .build(),
            assertions: Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(ASSERTION_TTL / 2)
                .build(),
        }
    }

    /// The signed `X-Identity-Assertion` for a principal (cached per session).
    pub fn assertion(&self, principal: &Principal, keys: &KeyRing) -> Option<HeaderValue> {
        let session_id = principal.session_id();
        if let Some(signed) = self.assertions.get(&session_id) {
            return Some(signed);
        }
        let signed = keys
            .issue_assertion(
                principal.user_id_text(),
                principal.session_id_text(),
                principal.email(),
                principal.email_verified(),
                principal.roles(),
                ASSERTION_TTL,
            )
            .map_err(|e| e.to_string())
            .and_then(|(token, _)| {
                HeaderValue::from_maybe_shared(Bytes::from(token)).map_err(|e| e.to_string())
            });
        match signed {
            Ok(value) => {
                self.assertions.insert(session_id, value.clone());
                Some(value)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot sign an identity assertion");
                None
            }
        }
    }

    /// Checks a bearer token: signature, issuer and expiry (cached), then the live session
    /// and the account (cached within the revocation bound).
    pub async fn check(
        &self,
        token: &str,
        keys: &KeyRing,
        sessions: &dyn SessionStore,
        users: &dyn UserStore,
    ) -> Result<Principal, Denial> {
        let token = self.verify(token, keys)?;
        let session = self.live_session(&token.session_id, sessions).await?;
        if session.user_id != token.user_id {
            return Err(Denial::SessionEnded);
        }
        let user = self.user(session.user_id, users).await?;
        if !user.is_active {
            return Err(Denial::Deactivated);
        }
        Ok(Principal {
            token,
            user,
            two_factor: session.two_factor,
        })
    }

    fn verify(&self, token: &str, keys: &KeyRing) -> Result<Arc<VerifiedToken>, Denial> {
        let now = Utc::now().timestamp();
        // A verification made under another ring (keys reloaded since) is made again.
        if let Some(verified) = self.tokens.get(token).filter(|v| v.ring == keys.serial()) {
            if verified.claims.exp > now {
                return Ok(verified);
            }
            self.tokens.invalidate(token);
            return Err(Denial::BadToken);
        }
        let claims = keys.verify_access(token).map_err(|_| Denial::BadToken)?;
        let verified = Arc::new(VerifiedToken::new(claims, keys.serial()).ok_or(Denial::BadToken)?);
        self.tokens.insert(token.to_owned(), verified.clone());
        Ok(verified)
    }

    async fn live_session(
        &self,
        id: &SessionId,
        store: &dyn SessionStore,
    ) -> Result<LiveSession, Denial> {
        if let Some(live) = self.sessions.get(id) {
            return Ok(live);
        }
        let session = store
            .liveness(id)
            .await
            .map_err(session_failure)?
            .ok_or(Denial::SessionEnded)?;
        let now = Utc::now();
        if (now - session.last_seen_at).num_seconds() >= TOUCH_INTERVAL_SECS {
            // Sliding expiry; a failure here only delays the slide.
            if let Err(e) = store.touch(id, now).await {
                tracing::debug!(error = %e, "could not slide a session");
            }
        }
        let live = LiveSession {
            user_id: session.user_id,
            two_factor: session.two_factor,
        };
        self.sessions.insert(*id, live.clone());
        Ok(live)
    }

    async fn user(&self, id: UserId, store: &dyn UserStore) -> Result<Arc<KnownUser>, Denial> {
        if let Some(user) = self.users.get(&id) {
            return Ok(user);
        }
        let user = store
            .find_by_id(id)
            .await
            .map_err(store_failure)?
            .ok_or(Denial::SessionEnded)?;
        let known = Arc::new(KnownUser::of(user).ok_or(Denial::BackendDown)?);
        self.users.insert(id, known.clone());
        Ok(known)
    }

    /// The principal of an access token this instance has just signed for `user`'s live
    /// session (a refresh): its claims are taken as signed, not verified again, and the
    /// token, session and account go into the caches the next request reads. `None` when
    /// the claims or the account cannot make one (a damaged record).
    pub fn admit(
        &self,
        token: &str,
        claims: AccessClaims,
        keys: &KeyRing,
        user: &User,
        two_factor: bool,
    ) -> Option<Principal> {
        let token_of = Arc::new(VerifiedToken::new(claims, keys.serial())?);
        let known = Arc::new(KnownUser::of(user.clone())?);
        self.tokens.insert(token.to_owned(), token_of.clone());
        let live = LiveSession {
            user_id: token_of.user_id,
            two_factor,
        };
        self.sessions.insert(token_of.session_id, live);
        self.users.insert(token_of.user_id, known.clone());
        Some(Principal {
            token: token_of,
            user: known,
            two_factor,
        })
    }

    /// Forgets a session at once (this instance ended it).
    pub fn forget_session(&self, id: &SessionId) {
        self.sessions.invalidate(id);
        self.assertions.invalidate(id);
    }

    /// Forgets the cached account record of a user (a new login reads it afresh); the
    /// user's sessions stay cached.
    pub fn forget_user_record(&self, id: UserId) {
        self.users.invalidate(&id);
    }

    /// Forgets a user and every cached session (their sessions ended, or the account changed).
    pub fn forget_user(&self, id: UserId) {
        self.users.invalidate(&id);
        // Sessions are keyed by id; a user-wide event is rare, so drop them all.
        self.sessions.invalidate_all();
        self.assertions.invalidate_all();
    }

    /// Applies one revocation event.
    pub fn apply(&self, event: &Revocation) {
        match event {
            Revocation::Session(id) => self.forget_session(id),
            Revocation::User(user) => self.forget_user(*user),
            Revocation::All => self.forget_everything(),
        }
    }

    /// Drops every signed assertion: the signing key changed (a reload), and an upstream
    /// may no longer accept the old one. (Verified tokens need no such step: each remembers
    /// the [`KeyRing::serial`] it was verified under.)
    pub fn forget_assertions(&self) {
        self.assertions.invalidate_all();
    }

    /// Drops every cached session and user (an event may have been missed).
    pub fn forget_everything(&self) {
        self.sessions.invalidate_all();
        self.users.invalidate_all();
        self.assertions.invalidate_all();
    }

    /// Follows the store's revocation events, on `backend`, until the store or the
    /// gatekeeper goes away.
    pub fn spawn_listener(
        self: &Arc<Self>,
        backend: &Backend,
        store: &dyn SessionStore,
    ) -> tokio::task::JoinHandle<()> {
        let mut events = store.revocations();
        let gatekeeper = Arc::downgrade(self);
        backend.spawn(async move {
            loop {
                let event = events.recv().await;
                let Some(gatekeeper) = gatekeeper.upgrade() else {
                    return;
                };
                match event {
                    Ok(event) => gatekeeper.apply(&event),
                    Err(RecvError::Lagged(_)) => gatekeeper.forget_everything(),
                    Err(RecvError::Closed) => return,
                }
            }
        })
    }
}

impl Gatekeeper {
    /// Follows the account change feed of `store` until the gatekeeper goes away: each new
    /// entry drops the user's cached record (and, for [`UserChange::SessionsEnded`], ends
    /// the user's sessions in this instance's session store first).
    ///
    /// The feed is a table rather than a message bus so that it works on every backend
    /// pair, SQLite and in-process sessions included, and so that the CLI, which only
    /// opens the database, can reach every running instance.
    pub fn spawn_change_follower(
        self: &Arc<Self>,
        backend: &Backend,
        store: Arc<dyn UserStore>,
        sessions: Arc<dyn SessionStore>,
    ) -> tokio::task::JoinHandle<()> {
        let gatekeeper = Arc::downgrade(self);
        backend.spawn(async move {
            // What was in the feed before this instance started is already reflected in
            // what it will read from the database.
            let mut applied: Option<HashSet<i64>> = None;
            let mut failing = false;
            let mut ticker = tokio::time::interval(USER_CHANGE_POLL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut polls: u32 = 0;
            loop {
                ticker.tick().await;
                let Some(gatekeeper) = gatekeeper.upgrade() else {
                    return;
                };
                polls = polls.wrapping_add(1);
                if polls.is_multiple_of(PURGE_EVERY_POLLS)
                    && let Err(e) = store.purge_user_changes().await
                {
                    tracing::debug!(error = %e, "could not purge the account change feed");
                }
                let events = match store.recent_user_changes().await {
                    Ok(events) => events,
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, "cannot read the account change feed; retrying");
                            failing = true;
                        }
                        continue;
                    }
                };
                if failing {
                    // Entries may have come and gone while the feed could not be read.
                    tracing::info!("reading the account change feed again");
                    gatekeeper.forget_everything();
                    failing = false;
                }
                let seen: HashSet<i64> = events.iter().map(|e| e.id).collect();
                if let Some(applied) = &applied {
                    for event in events.iter().filter(|e| !applied.contains(&e.id)) {
                        gatekeeper.apply_change(event, &*sessions).await;
                    }
                }
                // Entries leave the window by age, so remembering the window is enough.
                applied = Some(seen);
            }
        })
    }

    async fn apply_change(&self, event: &UserChangeEvent, sessions: &dyn SessionStore) {
        let user_id = event.user_id;
        if event.change == UserChange::SessionsEnded {
            match end_sessions_started_before(sessions, user_id, event.changed_at).await {
                Ok(0) => {}
                Ok(ended) => tracing::info!(
                    target: crate::telemetry::SECURITY,
                    event = "sessions_ended_by_operator",
                    user_id = %user_id,
                    sessions_ended = ended,
                ),
                Err(e) => {
                    tracing::warn!(error = %e, user_id = %user_id, "could not end the sessions of a changed account")
                }
            }
        }
        self.forget_user(user_id);
    }
}

/// Ends the sessions of `user_id` that started before `changed_at`. A session started after
/// the change (the user logging in again once an operator reset their 2FA, before this
/// instance read the feed) is left alone. Deactivation does not depend on it: an inactive
/// account is refused on its next check anyway.
async fn end_sessions_started_before(
    sessions: &dyn SessionStore,
    user_id: UserId,
    changed_at: chrono::DateTime<Utc>,
) -> Result<usize, SessionError> {
    let mut ended = 0;
    for session in sessions.list(user_id).await? {
        if session.created_at <= changed_at && sessions.revoke(&session.id).await? {
            ended += 1;
        }
    }
    Ok(ended)
}

fn session_failure(e: SessionError) -> Denial {
    tracing::warn!(error = %e, "session store unavailable on the proxy path");
    Denial::BackendDown
}

fn store_failure(e: StoreError) -> Denial {
    tracing::warn!(error = %e, "user store unavailable on the proxy path");
    Denial::BackendDown
}
