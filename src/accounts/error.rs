//! Why an account operation did not go through: one enum for every way in, one mapping to
//! the account API's envelope, one key into the portal's message catalogue.

use http::StatusCode;
use serde_json::{Value, json};
use webauthn_rs::prelude::RequestChallengeResponse;

use super::pending::PendingId;
use crate::access::credentials::unauthorized;
use crate::auth::password::PasswordError;
use crate::config::Refusal;
use crate::passkeys::CeremonyId;
use crate::reply::{FieldError, Reply};
use crate::session::SessionError;
use crate::store::StoreError;

/// A passkey challenge for the second step of a password sign-in: the ceremony to finish
/// and what `navigator.credentials.get()` takes.
pub struct PasskeyChallenge {
    /// The id the answer must name to finish the ceremony (a bearer: never logged).
    pub ceremony: CeremonyId,
    /// The WebAuthn request options, serialised as `navigator.credentials.get()` takes them.
    pub options: RequestChallengeResponse,
}

impl std::fmt::Debug for PasskeyChallenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The ceremony id is a bearer of the challenge: kept out of logs.
        f.write_str("PasskeyChallenge")
    }
}

/// What the second step of a password sign-in offers: the methods the account has
/// (`totp`, `passkey`), a passkey challenge when it has passkeys, and the pending step's
/// id when the caller asked the core to hold it (`SignIn::hold_pending`).
#[derive(Debug)]
pub struct SecondStep {
    /// The second factors the account has: `totp`, `passkey`, or both.
    pub methods: Vec<&'static str>,
    /// A challenge to sign; `None` when the account has no usable passkey, passkeys are
    /// off, or the challenge could not be started.
    pub passkey: Option<PasskeyChallenge>,
    /// The held step's id; `None` unless `SignIn::hold_pending` was asked.
    pub pending: Option<PendingId>,
}

/// Why an account operation was refused or could not be done.
#[derive(Debug)]
pub enum AccountError {
    /// 401 `invalid_credentials`: an unknown address, a wrong password or a wrong code
    /// (one answer for all three). Login metric `failure`.
    InvalidCredentials,
    /// 423 `account_locked`: too many failed guesses. Login metric `locked`.
    Locked,
    /// 503: a guess waited for room among the guesses in flight in vain.
    Busy,
    /// 403 `account_deactivated`. Login metric `deactivated`; logged
    /// `login_refused_deactivated` where a sign-in meets it.
    Deactivated,
    /// 401 `two_factor_required`: the password was right; a second factor must follow.
    /// Login metric `two_factor_required`.
    SecondFactorRequired(Box<SecondStep>),
    /// 401 `invalid_credentials`: the second factor of a pending sign-in was wrong (counted
    /// against the lockout); a fresh step to try again. Login metric `failure`.
    WrongSecondFactor(Box<SecondStep>),
    /// 400 `sign_in_expired`: no such pending sign-in (expired, used, never held).
    PendingExpired,
    /// 404 `session_not_found`: no such session of this account.
    SessionNotFound,
    /// 401 `invalid_token`: the refresh token is unknown, expired or its account gone.
    InvalidRefreshToken,
    /// 401 `refresh_token_reused`: a rotated refresh token came back; the session ended.
    /// Counted in `refresh_reuse`, logged `refresh_token_reuse`.
    RefreshTokenReused,
    /// 401 `passkey_refused`: the passkey did not sign the challenge as expected.
    /// Login metric `failure`.
    PasskeyRefused,
    /// 400 `ceremony_invalid`: no such passkey ceremony (expired, finished, never begun).
    CeremonyInvalid,
    /// 404 `passkeys_disabled`: the public URL cannot be a WebAuthn relying party.
    PasskeysDisabled,
    /// 403 `registration_closed` or `invitation_required`: `[registration]` does not let
    /// this address register by itself.
    RegistrationRefused(Refusal),
    /// 400 `validation_error` naming one field: a step-up's wrong password or code.
    Field {
        /// The request field that was wrong (e.g. `current_password`).
        field: &'static str,
        /// What is wrong with it, for the caller.
        message: &'static str,
    },
    /// 400 `validation_error` naming every field at fault (a form's input refused by the
    /// rules of the field: an address, a new password, a name).
    Invalid(Vec<FieldError>),
    /// The user store failed (503 when unreachable).
    Store(StoreError),
    /// The session backend failed (503 when unreachable).
    Session(SessionError),
    /// Password hashing failed (500).
    Password(PasswordError),
    /// A bug or a damaged record (500): what was being done, and the cause (logged only).
    Internal {
        /// What was being done; logged with the cause (the client sees only `internal_error`).
        context: &'static str,
        /// The underlying error's text; logged only, never sent to the client.
        cause: String,
    },
}

impl AccountError {
    /// A 500 for `context`, keeping the cause for the log.
    pub fn internal(context: &'static str, cause: &dyn std::fmt::Display) -> Self {
        Self::Internal {
            context,
            cause: cause.to_string(),
        }
    }

    /// The label of `portcullis_logins_total` this refusal of a sign-in counts under,
    /// if any (failures of a backend are not sign-in results).
    pub fn login_metric(&self) -> Option<&'static str> {
        Some(match self {
            Self::InvalidCredentials | Self::PasskeyRefused | Self::WrongSecondFactor(_) => {
                "failure"
            }
            Self::Locked => "locked",
            Self::Deactivated => "deactivated",
            Self::SecondFactorRequired(_) => "two_factor_required",
            _ => return None,
        })
    }

    /// Whether a backend could not be asked (answered 503): nothing was decided.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Busy
                | Self::Store(StoreError::Unavailable(_))
                | Self::Session(SessionError::Unavailable(_))
        )
    }

    /// The code of this error, as the account API's envelope carries it (`code`): the key
    /// the portal's pages look their message up by (`portal::error_key`), so a page and the
    /// API name a refusal alike.
    pub fn catalogue_key(&self) -> &'static str {
        match self {
            Self::InvalidCredentials | Self::WrongSecondFactor(_) => "invalid_credentials",
            Self::PendingExpired => "sign_in_expired",
            Self::SessionNotFound => "session_not_found",
            Self::Locked => "account_locked",
            Self::Busy => "service_unavailable",
            Self::Deactivated => "account_deactivated",
            Self::SecondFactorRequired(_) => "two_factor_required",
            Self::InvalidRefreshToken => "invalid_token",
            Self::RefreshTokenReused => "refresh_token_reused",
            Self::PasskeyRefused => "passkey_refused",
            Self::CeremonyInvalid => "ceremony_invalid",
            Self::PasskeysDisabled => "passkeys_disabled",
            Self::RegistrationRefused(refusal) => refusal.code(),
            Self::Field { .. } | Self::Invalid(_) => "validation_error",
            Self::Store(StoreError::Unavailable(_))
            | Self::Session(SessionError::Unavailable(_)) => "service_unavailable",
            Self::Store(StoreError::DuplicateEmail) => "email_taken",
            Self::Store(StoreError::NotFound) => "invalid_token",
            Self::Store(_) | Self::Session(_) | Self::Password(_) | Self::Internal { .. } => {
                "internal_error"
            }
        }
    }
}

impl From<Refusal> for AccountError {
    fn from(refusal: Refusal) -> Self {
        Self::RegistrationRefused(refusal)
    }
}

impl From<StoreError> for AccountError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<SessionError> for AccountError {
    fn from(e: SessionError) -> Self {
        Self::Session(e)
    }
}

impl From<PasswordError> for AccountError {
    fn from(e: PasswordError) -> Self {
        Self::Password(e)
    }
}

impl From<AccountError> for Reply {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::InvalidCredentials | AccountError::WrongSecondFactor(_) => Reply::error(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "Invalid email or password",
            ),
            AccountError::Locked => Reply::error(
                StatusCode::LOCKED,
                "account_locked",
                "Account is temporarily locked after too many failed attempts; try again later",
            ),
            AccountError::Busy => Reply::unavailable("sign-in check"),
            AccountError::Deactivated => Reply::error(
                StatusCode::FORBIDDEN,
                "account_deactivated",
                "This account has been deactivated",
            ),
            AccountError::SecondFactorRequired(step) => second_factor_required(*step),
            AccountError::SessionNotFound => Reply::error(
                StatusCode::NOT_FOUND,
                "session_not_found",
                "No such session",
            ),
            AccountError::PendingExpired => Reply::error(
                StatusCode::BAD_REQUEST,
                "sign_in_expired",
                "The sign-in took too long or was already finished; sign in again",
            ),
            AccountError::InvalidRefreshToken => {
                unauthorized("invalid_token", "Invalid or expired refresh token")
            }
            AccountError::RefreshTokenReused => unauthorized(
                "refresh_token_reused",
                "Refresh token was already used; the session has ended",
            ),
            AccountError::PasskeyRefused => Reply::error(
                StatusCode::UNAUTHORIZED,
                "passkey_refused",
                "The passkey could not be verified",
            ),
            AccountError::CeremonyInvalid => Reply::error(
                StatusCode::BAD_REQUEST,
                "ceremony_invalid",
                "The passkey ceremony has expired or was already used; start again",
            ),
            AccountError::PasskeysDisabled => Reply::error(
                StatusCode::NOT_FOUND,
                "passkeys_disabled",
                "Passkeys are not available on this server",
            ),
            AccountError::RegistrationRefused(refusal) => registration_refused(refusal),
            AccountError::Field { field, message } => {
                Reply::validation(&[FieldError::new(field, message)])
            }
            AccountError::Invalid(errors) => Reply::validation(&errors),
            AccountError::Store(e) => e.into(),
            AccountError::Session(e) => e.into(),
            AccountError::Password(e) => e.into(),
            AccountError::Internal { context, cause } => Reply::internal(context, &cause),
        }
    }
}

/// 403 `registration_closed` or `invitation_required`: what the caller can do instead.
fn registration_refused(refusal: Refusal) -> Reply {
    let message = match refusal {
        Refusal::Closed | Refusal::DomainNotAllowed => {
            "Registration is closed for this address; ask an administrator for an account"
        }
        Refusal::InvitationRequired => {
            "Registration is by invitation only; ask an administrator for an invitation"
        }
    };
    Reply::error(StatusCode::FORBIDDEN, refusal.code(), message)
}

/// 401 `two_factor_required`, with `data.methods` and, when the user has passkeys,
/// `data.passkey` `{ceremony_id, options}` for `navigator.credentials.get()`.
fn second_factor_required(step: SecondStep) -> Reply {
    let mut response = Reply::error(
        StatusCode::UNAUTHORIZED,
        "two_factor_required",
        "A second factor is required: a two-factor code or a passkey",
    );
    let mut data = json!({});
    if let Some(challenge) = step.passkey {
        data["passkey"] = json!({
            "ceremony_id": challenge.ceremony.as_str(),
            "options": serde_json::to_value(&challenge.options).unwrap_or(Value::Null),
        });
    }
    data["methods"] = json!(step.methods);
    if let crate::reply::Body::Json(body) = &mut response.body {
        body["data"] = data;
    }
    response
}
