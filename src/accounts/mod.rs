//! The account core: how a person proves who they are, and the sessions that follow.
//!
//! One set of typed operations for every way in: the account API (`api/`) parses JSON into
//! these inputs and maps the results onto its envelope; the portal's pages and the proxy's
//! cookie renewal call them too. Nothing here knows a request, a `Reply` body, JSON, a
//! cookie or `App`: each operation takes typed input and a [`Client`] (where the call comes
//! from, for logs and mail) and returns `Result<_, AccountError>`.
//!
//! - [`Accounts::sign_in`]: a password, then a second factor (TOTP, recovery code or a
//!   passkey) when the account has one, in the same call or, for pages, held on the server
//!   and finished by [`Accounts::finish_sign_in`]; [`Accounts::sign_in_with_passkey`]: a discoverable
//!   passkey alone;
//! - [`Accounts::refresh`]: refresh-token rotation with reuse detection, answering the
//!   new tokens and the [`Principal`] they stand for;
//! - [`Accounts::logout`], [`Accounts::logout_all`]: through `Access::revoke_*`;
//! - [`Accounts::reauthenticate`]: the user of a live session proves who they are again
//!   (a route's `max_auth_age`), the same session with a new `auth_time`;
//! - [`Accounts::step_up`]: the proof every security change needs, and the changes behind
//!   it ([`Accounts::change_password`], [`Accounts::deactivate`]); [`Accounts::update_profile`]
//!   the name, which needs none;
//! - `registration`: [`Accounts::register`], [`Accounts::verify_email`],
//!   [`Accounts::resend_verification`], [`Accounts::request_password_reset`] (which looks
//!   nothing up before it returns) and [`Accounts::reset_password`]: the mailed single-use
//!   links and the mail itself;
//! - `invitations`: [`Accounts::invite`] (and [`issue_invitation`] for the CLI),
//!   [`Accounts::accept_invitation`], [`Accounts::revoke_invitation`],
//!   [`Accounts::list_invitations`]: one address let in, with roles, in every
//!   `[registration]` mode;
//! - [`fields`]: the rules of what people type (addresses, new passwords, names), parsing
//!   the raw text either way in reads ([`Registration`], [`ProfileChange`], [`ResetForm`],
//!   [`PasswordChange`]) into typed values or `AccountError::Invalid` naming every field;
//! - `two_factor`: TOTP management ([`Accounts::setup_two_factor`],
//!   [`Accounts::enable_two_factor`] with its recovery codes, [`Accounts::disable_two_factor`],
//!   [`Accounts::regenerate_recovery_codes`]), each behind a verified address and the
//!   step-up (with a code while TOTP is on), and [`Accounts::recovery_codes_remaining`];
//! - `passkey`: passkey sign-in and the account's passkeys
//!   ([`Accounts::begin_passkey_registration`] and [`Accounts::add_passkey`],
//!   [`Accounts::passkeys_of`], [`Accounts::rename_passkey`], [`Accounts::remove_passkey`]);
//! - `lockout`: the one gate every guess at a password or a code passes (where the lockout
//!   is applied; per-IP rate limits stay with the ways in, before any of this runs).

pub mod admin;
mod audit;
mod error;
pub mod federation;
pub mod fields;
mod invitations;
mod lockout;
mod passkey;
mod pending;
mod profile;
mod proof;
mod reauth;
mod registration;
mod two_factor;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use prometheus::{IntCounter, IntCounterVec};

pub use error::{AccountError, PasskeyChallenge, SecondStep};
pub use fields::{
    InvitationForm, InvitedAccount, InvitedNames, NewAccount, NewNames, PasswordChange,
    ProfileChange, Registration, ResetForm,
};
pub use invitations::issue_invitation;
pub use passkey::{
    NewPasskey, PasskeyAnswer, PasskeyName, PasskeySignIn, RegistrationChallenge, credential_key,
    verified_for_passkeys,
};
pub use pending::{PENDING_TTL, PendingId};
pub use proof::{SecondFactor, StepUp};
pub use reauth::{Reauthenticated, Reproof};
pub use registration::{RESET_TTL, VERIFICATION_TTL, mail_operator_reset};
pub use two_factor::{TotpEnable, verified_for_two_factor};

use crate::access::Access;
use crate::access::gatekeeper::Principal;
use crate::auth::Verified;
use crate::auth::jwt::{AMR_PASSWORD, KeyRing};
use crate::auth::password::PasswordHasher;
use crate::auth::secrets::{
    format_refresh_token, next_refresh_secret, parse_refresh_token, random_token, sha256_hex,
};
use crate::auth::totp::TwoFactor;
use crate::backend::Backend;
use crate::config::Config;
use crate::domain::{Email, NewPassword, Password, email};
use crate::mail::{MailKind, Mailer};
use crate::metrics::Metrics;
use crate::passkeys::Passkeys;
use crate::session::{NewSession, PasskeyUse, RotateOutcome, Session, SessionId, SessionStore};
use crate::store::{Actor, AuditKind, AuditOutcome, NewAuditEvent, User, UserStore};
use crate::telemetry::SECURITY;

/// Concurrent refreshes of one token within this window get the same answer.
pub const REFRESH_GRACE: Duration = Duration::from_secs(5);
/// How long a device (IP + user agent) is remembered for login notifications.
const KNOWN_DEVICE_TTL: Duration = Duration::from_secs(180 * 86_400);

/// The account core bound to this instance's stores, keys and mail; built in `App::new`.
pub struct Accounts {
    config: Arc<Config>,
    store: Arc<dyn UserStore>,
    sessions: Arc<dyn SessionStore>,
    access: Arc<Access>,
    keys: Arc<KeyRing>,
    hasher: PasswordHasher,
    two_factor: Arc<TwoFactor>,
    passkeys: Arc<Passkeys>,
    mailer: Arc<Mailer>,
    backend: Backend,
    /// The `[[identity_providers]]` and their HTTP client.
    federation: federation::Federation,
    /// `portcullis_logins_total` by result.
    logins: IntCounterVec,
    lockouts: IntCounter,
    refresh_reuse: IntCounter,
}

/// The parts of the instance the core works with.
pub struct Parts {
    /// The loaded configuration (token lifetimes, lockout, password policy).
    pub config: Arc<Config>,
    /// Where accounts, passkeys and security records are kept.
    pub store: Arc<dyn UserStore>,
    /// Where sessions, refresh tokens and ceremonies are kept.
    pub sessions: Arc<dyn SessionStore>,
    /// Access control: token verification and route-policy decisions.
    pub access: Arc<Access>,
    /// The keys that sign and verify access tokens.
    pub keys: Arc<KeyRing>,
    /// The bcrypt hasher with its bounded queue of guesses in flight.
    pub hasher: PasswordHasher,
    /// The TOTP issuer name and the key that seals TOTP secrets.
    pub two_factor: Arc<TwoFactor>,
    /// The WebAuthn relying party, or why passkeys are off.
    pub passkeys: Arc<Passkeys>,
    /// Renders and delivers mail (verification, password reset, security notices).
    pub mailer: Arc<Mailer>,
    /// The runtime that owns the backends' sockets: work done after the answer (a reset
    /// request's lookup) runs there.
    pub backend: Backend,
}

/// Where a call comes from: for security logs, device notifications and mail.
#[derive(Clone, Copy, Debug)]
pub struct Client<'a> {
    /// The client address after `trusted_proxies` were applied.
    pub ip: IpAddr,
    /// The `User-Agent` header, truncated; empty when absent.
    pub user_agent: &'a str,
    /// The language of the page or request (a mail goes in the user's own when they have one).
    pub language: &'a str,
}

/// A password sign-in: the address as typed (an unknown or malformed one is answered as a
/// wrong password is, after the same work), the password as typed (a guess, not held to the
/// password policy), and the second factor when the account has one.
pub struct SignIn<'a> {
    /// The email address as typed, before normalisation.
    pub email: &'a str,
    /// The password as typed.
    pub password: &'a str,
    /// A longer session (`tokens.remember_me_ttl` instead of `tokens.refresh_ttl`).
    pub remember_me: bool,
    /// The second factor sent with the password; [`SecondFactor::Code`]`(None)` when none.
    pub second: SecondFactor,
    /// When a second factor is needed and was not sent, hold the step on the server and
    /// name it in `SecondStep::pending` (finished by [`Accounts::finish_sign_in`]).
    pub hold_pending: bool,
}

/// A fresh access token and its refresh token (RFC 6749 §5.1 shapes).
#[derive(Clone, Debug)]
pub struct Tokens {
    /// The signed JWT access token (compact form).
    pub access_token: String,
    /// The opaque refresh token; shown once, only its hash is stored.
    pub refresh_token: String,
    /// Seconds the access token lives.
    pub expires_in: u64,
    /// Seconds the session (and so the refresh token) may live at most.
    pub refresh_expires_in: u64,
}

/// A session that has just begun: who, and its tokens.
pub struct SignedIn {
    /// The account signed in to, as stored.
    pub user: User,
    /// The session's first access and refresh tokens.
    pub tokens: Tokens,
}

/// A refresh token rotated: the new tokens and who the new access token stands for (built
/// from what was just minted, not by verifying it again).
pub struct Renewed {
    /// Who the new access token stands for.
    pub principal: Principal,
    /// The new access token and the rotated refresh token.
    pub tokens: Tokens,
}

/// How a person proved who they are, for the session it opens.
#[derive(Clone, Copy, Debug)]
struct Proven<'a> {
    /// A second factor took part (for a provider: its `amr`, trusted).
    two_factor: bool,
    /// Whether, and how, a passkey took part.
    passkey: PasskeyUse,
    /// The identity provider signed in through, if any.
    provider: Option<&'a str>,
    /// When the provider says the user proved who they are; `None`: now.
    auth_time: Option<chrono::DateTime<Utc>>,
    /// The audit trail's note on how.
    how: &'a str,
}

/// The amr claim values (RFC 8176) of a session: what this gateway can vouch for.
///
/// A session opened through an identity provider never claims a password or a code it did
/// not see: `["mfa"]` once it counts as two factors (the provider's `amr` admitted by
/// `trust_provider_mfa`, or a local step-up since), otherwise `[]`.
pub fn amr_of(session: &Session) -> &'static [&'static str] {
    use crate::auth::jwt::{AMR_HARDWARE_KEY, AMR_MULTIPLE_FACTORS, AMR_OTP};
    if session.provider.is_some() {
        return if session.two_factor {
            &[AMR_MULTIPLE_FACTORS]
        } else {
            &[]
        };
    }
    match session.passkey {
        PasskeyUse::SecondFactor => &[AMR_PASSWORD, AMR_HARDWARE_KEY],
        PasskeyUse::Passwordless => &[AMR_HARDWARE_KEY, AMR_MULTIPLE_FACTORS],
        PasskeyUse::None if session.two_factor => &[AMR_PASSWORD, AMR_OTP],
        PasskeyUse::None => &[AMR_PASSWORD],
    }
}

impl Accounts {
    /// Binds the core to the instance's parts; `metrics` gives the sign-in counters.
    pub fn new(parts: Parts, metrics: &Metrics) -> Self {
        Self {
            federation: federation::Federation::new(&parts.config),
            config: parts.config,
            store: parts.store,
            sessions: parts.sessions,
            access: parts.access,
            keys: parts.keys,
            hasher: parts.hasher,
            two_factor: parts.two_factor,
            passkeys: parts.passkeys,
            mailer: parts.mailer,
            backend: parts.backend,
            logins: metrics.logins.clone(),
            lockouts: metrics.lockouts.clone(),
            refresh_reuse: metrics.refresh_reuse.clone(),
        }
    }

    /// Counts a sign-in's refusal under its login metric, if it has one.
    fn counted<T>(&self, result: Result<T, AccountError>) -> Result<T, AccountError> {
        if let Err(label) = result.as_ref().map_err(AccountError::login_metric)
            && let Some(label) = label
        {
            self.logins.with_label_values(&[label]).inc();
        }
        result
    }

    /// Signs in with a password (and the second factor the account needs). The guess is
    /// claimed against the lockout before bcrypt runs; unknown and malformed addresses are
    /// counted and answered as real ones are, so neither status nor timing tells which
    /// accounts exist.
    ///
    /// Errors: `InvalidCredentials`, `Locked`, `Busy`, `Deactivated`,
    /// `SecondFactorRequired` (the password was right), backend failures.
    pub async fn sign_in(
        &self,
        input: SignIn<'_>,
        client: &Client<'_>,
    ) -> Result<SignedIn, AccountError> {
        let result = self.check_password_sign_in(&input, client).await;
        let (user, two_factor, passkey) = self.counted(result)?;
        self.open_session(&user, two_factor, passkey, input.remember_me, client)
            .await
            .map(|tokens| SignedIn { user, tokens })
    }

    /// The checks of [`Accounts::sign_in`]: the account, whether it passed a second factor
    /// and whether that was a passkey.
    async fn check_password_sign_in(
        &self,
        input: &SignIn<'_>,
        client: &Client<'_>,
    ) -> Result<(User, bool, PasskeyUse), AccountError> {
        let user = match Email::parse(input.email) {
            Ok(email) => self.store.find_by_email(&email).await?,
            Err(_) => None,
        };
        let Some(user) = user else {
            let canonical = email::canonical(input.email.trim());
            return Err(lockout::unknown_account(self, &canonical, input.password, client).await);
        };
        // The guess is claimed before bcrypt runs: a burst cannot get more checks than the
        // lockout allows, and a right password meets a lock only one set by wrong ones.
        let guess = lockout::claim(self, &user, input.password, client, AuditKind::SignIn).await?;
        let verified = match self.hasher.check(input.password, &user.password_hash).await {
            Ok(verified) if verified.matches() => verified,
            Ok(_) => {
                guess.failed(self, client, "wrong_password").await;
                return Err(AccountError::InvalidCredentials);
            }
            Err(e) => return Err(guess.unchecked(self, e.into()).await),
        };
        if !user.is_active {
            guess.released(self).await?;
            tracing::warn!(target: SECURITY, event = "login_refused_deactivated", user_id = %user.id, client_ip = %client.ip);
            self.audit_own(
                AuditKind::SignIn,
                &user,
                Some(client),
                AuditOutcome::Refused,
                "deactivated",
            );
            return Err(AccountError::Deactivated);
        }
        let (two_factor, passkey) = match self.second_factor(&user, &input.second, client).await {
            Ok(passed) => passed,
            Err(proof::Failed::Required) => {
                guess.released(self).await?;
                let hold = input.hold_pending.then_some(input.remember_me);
                return Err(self.second_step(&user, hold, false).await);
            }
            Err(proof::Failed::Wrong) => {
                guess.failed(self, client, "wrong_two_factor_code").await;
                return Err(AccountError::InvalidCredentials);
            }
            Err(proof::Failed::Replayed) => {
                guess.failed(self, client, "replayed_two_factor_code").await;
                return Err(AccountError::CodeReplayed(None));
            }
            Err(proof::Failed::Backend(e)) => return Err(guess.unchecked(self, e).await),
        };
        guess.succeeded(self).await?;
        self.renew_hash(&user, input.password, verified).await;
        Ok((user, two_factor, passkey))
    }

    /// After a right password: a hash made at another cost, or before passwords were
    /// normalised (it matched only as typed), is replaced by a fresh hash of the normalised
    /// form, so the next check is a [`Verified::Match`]. A failure is logged, not answered.
    async fn renew_hash(&self, user: &User, password: &str, verified: Verified) {
        if verified != Verified::MatchAsTyped && !self.hasher.needs_rehash(&user.password_hash) {
            return;
        }
        match self.hasher.hash(password).await {
            Ok(hash) => {
                if let Err(e) = self.store.set_password_hash(user.id, &hash).await {
                    tracing::warn!(error = %e, user_id = %user.id, "could not store the re-hashed password");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not re-hash a password"),
        }
    }

    /// Starts a session for `user`, who has just proved who they are (a password, perhaps
    /// with a second factor, or a passkey alone), and signs its first tokens.
    async fn open_session(
        &self,
        user: &User,
        two_factor: bool,
        passkey: PasskeyUse,
        remember_me: bool,
        client: &Client<'_>,
    ) -> Result<Tokens, AccountError> {
        let how = match (passkey, two_factor) {
            (PasskeyUse::None, true) => "password and code",
            (PasskeyUse::None, false) => "password",
            (PasskeyUse::SecondFactor, _) => "password and passkey",
            (PasskeyUse::Passwordless, _) => "passkey",
        };
        let proven = Proven {
            two_factor,
            passkey,
            provider: None,
            auth_time: None,
            how,
        };
        self.open_session_as(user, proven, remember_me, client)
            .await
    }

    /// [`Accounts::open_session`] for a sign-in `proven` as it says (a provider's names the
    /// provider, which the session keeps).
    async fn open_session_as(
        &self,
        user: &User,
        proven: Proven<'_>,
        remember_me: bool,
        client: &Client<'_>,
    ) -> Result<Tokens, AccountError> {
        let Proven {
            two_factor,
            passkey,
            provider,
            auth_time,
            how,
        } = proven;
        self.store.record_successful_login(user.id).await?;
        // A new session never starts from a cached copy of the account that may predate an
        // operator's change.
        self.access.forget_user_record(user.id);
        let tokens_cfg = &self.config.tokens;
        let lifetime = if remember_me {
            tokens_cfg.remember_me_ttl.get()
        } else {
            tokens_cfg.refresh_ttl.get()
        };
        let secret = random_token();
        let created = self
            .sessions
            .create(NewSession {
                id: SessionId::generate(),
                user_id: user.id,
                ip: client.ip.to_string(),
                user_agent: client.user_agent.to_owned(),
                two_factor,
                passkey,
                provider: provider.map(str::to_owned),
                auth_time,
                remember_me,
                refresh_hash: sha256_hex(&secret),
                idle_ttl: lifetime,
                // `sessions.max_lifetime` caps every session, refresh lifetime included.
                absolute_ttl: lifetime.min(self.config.sessions.max_lifetime.get()),
                max_per_user: self.config.sessions.max_per_user,
            })
            .await?;
        self.access.forget_sessions(&created.evicted);
        for evicted in &created.evicted {
            tracing::info!(target: SECURITY, event = "session_evicted", user_id = %user.id, session_id = %evicted);
        }
        let session = created.session;
        let refresh_token = format_refresh_token(&session.id.to_string(), &secret);
        let (tokens, _) = self.tokens_for(&session, refresh_token)?;
        self.logins.with_label_values(&["success"]).inc();
        tracing::info!(
            target: SECURITY,
            event = "login_succeeded",
            user_id = %user.id,
            session_id = %session.id,
            two_factor,
            passkey = passkey.as_str(),
            client_ip = %client.ip,
        );
        self.audit_own(
            AuditKind::SignIn,
            user,
            Some(client),
            AuditOutcome::Success,
            how,
        );
        self.notify_new_device(user, client).await;
        Ok(tokens)
    }

    /// Signs an access token for a session; with its claims.
    fn tokens_for(
        &self,
        session: &Session,
        refresh_token: String,
    ) -> Result<(Tokens, crate::auth::jwt::AccessClaims), AccountError> {
        let (access_token, claims) = self.access_token_for(session)?;
        let refresh_expires_in = (session.expires_at - Utc::now()).num_seconds().max(0);
        let tokens = Tokens {
            access_token,
            refresh_token,
            expires_in: self.config.tokens.access_ttl.get().as_secs(),
            refresh_expires_in: refresh_expires_in.unsigned_abs(),
        };
        Ok((tokens, claims))
    }

    /// Signs an access token for a session (its `amr` and `auth_time`); with its claims.
    fn access_token_for(
        &self,
        session: &Session,
    ) -> Result<(String, crate::auth::jwt::AccessClaims), AccountError> {
        self.keys
            .issue_session_access(
                &session.user_id.to_string(),
                &session.id.to_string(),
                amr_of(session),
                session.auth_time.timestamp(),
                self.config.tokens.access_ttl.get(),
            )
            .map_err(|e| AccountError::internal("signing an access token", &e))
    }

    /// `typed` held to `[passwords]`, with the account's address and names as known words
    /// (`fields::admit_password`); `Invalid` naming `field`.
    fn admit_password(
        &self,
        field: &str,
        typed: NewPassword,
        user_inputs: &[&str],
    ) -> Result<Password, AccountError> {
        let policy = self.config.passwords.policy();
        fields::admit_password(&policy, field, typed, user_inputs)
    }

    /// The language of a mail to `user`: the one they registered in, else the client's.
    fn mail_language<'a>(&self, user: &'a User, client: &Client<'a>) -> &'a str {
        if user.language.is_empty() {
            client.language
        } else {
            &user.language
        }
    }

    /// Mails the user when a login comes from a device/IP not seen before (after the first login).
    async fn notify_new_device(&self, user: &User, client: &Client<'_>) {
        if !self.config.mail.login_notifications {
            return;
        }
        let device = sha256_hex(&format!("{}|{}", client.ip, client.user_agent));
        let key = format!("device:{}:{device}", user.id);
        match self.sessions.claim_once(&key, KNOWN_DEVICE_TTL).await {
            Ok(true) if user.last_login.is_some() => {
                self.mailer.send_in_background_in(
                    self.mail_language(user, client),
                    user.email.as_str(),
                    &user.first_name,
                    MailKind::LoginNotification {
                        ip: client.ip.to_string(),
                        user_agent: client.user_agent.to_owned(),
                        time: Utc::now(),
                    },
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not check for a new device"),
        }
    }

    /// Rotates a refresh token (`<session id>.<secret>`): the new pair, and the principal
    /// the new access token stands for. A token presented again within [`REFRESH_GRACE`]
    /// of its rotation gets the same successor; later, it ends the session
    /// (`RefreshTokenReused`). An ended session or an inactive account is
    /// `InvalidRefreshToken`.
    pub async fn refresh(&self, token: &str, client: &Client<'_>) -> Result<Renewed, AccountError> {
        let (sid, secret) = parse_refresh_token(token).ok_or(AccountError::InvalidRefreshToken)?;
        let session_id = sid
            .parse::<SessionId>()
            .map_err(|_| AccountError::InvalidRefreshToken)?;
        let next = next_refresh_secret(self.keys.refresh_rotation_key(), &sid, &secret);
        let outcome = self
            .sessions
            .rotate_refresh(
                &session_id,
                &sha256_hex(&secret),
                &sha256_hex(&next),
                REFRESH_GRACE,
            )
            .await?;
        let session = match outcome {
            RotateOutcome::Rotated(session) | RotateOutcome::AlreadyRotated(session) => session,
            RotateOutcome::Reused { user_id } => {
                // The store ended the session when it saw the reuse; the caches follow.
                self.access.forget_sessions(&[session_id]);
                self.refresh_reuse.inc();
                tracing::warn!(
                    target: SECURITY,
                    event = "refresh_token_reuse",
                    user_id = %user_id,
                    session_id = %session_id,
                    client_ip = %client.ip,
                );
                let event = NewAuditEvent::new(AuditKind::RefreshReuse, Actor::Anonymous, None)
                    .outcome(AuditOutcome::Refused)
                    .from_ip(client.ip)
                    .detail("the session ended");
                self.audit_about(user_id, event);
                return Err(AccountError::RefreshTokenReused);
            }
            RotateOutcome::NotFound => return Err(AccountError::InvalidRefreshToken),
        };
        let user = match self.store.find_by_id(session.user_id).await? {
            Some(user) if user.is_active => user,
            _ => {
                let _ = self.access.revoke_session(&session.id).await;
                return Err(AccountError::InvalidRefreshToken);
            }
        };
        let (tokens, claims) = self.tokens_for(&session, format_refresh_token(&sid, &next))?;
        let principal = self
            .access
            .admit(&tokens.access_token, claims, &user, session.two_factor)
            .ok_or_else(|| AccountError::internal("admitting a fresh token", &"unusable claims"))?;
        Ok(Renewed { principal, tokens })
    }

    /// Ends one session at once (store, then caches); `client` is who asked.
    pub async fn logout(
        &self,
        user: &User,
        session: &SessionId,
        client: &Client<'_>,
    ) -> Result<(), AccountError> {
        self.access.revoke_session(session).await?;
        tracing::info!(target: SECURITY, event = "logout", user_id = %user.id, session_id = %session);
        self.audit_own(
            AuditKind::SessionEnd,
            user,
            Some(client),
            AuditOutcome::Success,
            "sign-out",
        );
        Ok(())
    }

    /// Ends one of `user`'s sessions; `SessionNotFound` when it is gone or not theirs
    /// (the same answer, so another account's session ids cannot be probed). `client` is
    /// who asked.
    pub async fn end_session(
        &self,
        user: &User,
        id: &SessionId,
        client: &Client<'_>,
    ) -> Result<(), AccountError> {
        match self.sessions.get(id).await? {
            Some(s) if s.user_id == user.id => {}
            _ => return Err(AccountError::SessionNotFound),
        }
        self.access.revoke_session(id).await?;
        tracing::info!(target: SECURITY, event = "session_revoked", user_id = %user.id, session_id = %id);
        self.audit_own(
            AuditKind::SessionEnd,
            user,
            Some(client),
            AuditOutcome::Success,
            "from the list",
        );
        Ok(())
    }

    /// `user`'s live sessions.
    pub async fn sessions_of(&self, user: &User) -> Result<Vec<Session>, AccountError> {
        Ok(self.sessions.list(user.id).await?)
    }

    /// Ends every session of `user` (`client` asked); answers how many ended.
    pub async fn logout_all(
        &self,
        user: &User,
        client: &Client<'_>,
    ) -> Result<usize, AccountError> {
        let ended = self.access.revoke_user(user.id, None).await?.len();
        tracing::info!(target: SECURITY, event = "logout_all", user_id = %user.id, sessions_ended = ended);
        let detail = format!("{ended} sessions ended");
        self.audit_own(
            AuditKind::LogoutAll,
            user,
            Some(client),
            AuditOutcome::Success,
            &detail,
        );
        Ok(ended)
    }
}
