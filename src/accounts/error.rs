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
    /// 401 `code_replayed`: a right TOTP code of a step already used (counted against the
    /// lockout like a wrong one); with a fresh step when a page's sign-in is pending.
    /// Login metric `failure`.
    CodeReplayed(Option<Box<SecondStep>>),
    /// 400 `sign_in_expired`: no such pending sign-in (expired, used, never held).
    PendingExpired,
    /// 404 `session_not_found`: no such session of this account.
    SessionNotFound,
    /// 404 `not_found`: the account was deleted while the change was on its way.
    AccountNotFound,
    /// 400 `invalid_token`: a mailed link (verification, reset) that is malformed,
    /// unknown, used or expired.
    InvalidLink,
    /// 400 `already_verified`: a verification link asked for an address already proven.
    AlreadyVerified,
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
    /// 403 `email_not_verified`: the change needs a proven address first; the message
    /// says which change (setting up two-factor authentication, adding a passkey).
    EmailNotVerified(&'static str),
    /// 409 `two_factor_already_enabled`: replacing TOTP needs the step-up with a code,
    /// and no password came with the request.
    TwoFactorAlreadyEnabled,
    /// 400 `two_factor_not_enabled`: there is no TOTP to turn off.
    TwoFactorNotEnabled,
    /// 400 `invalid_account_name`: the address cannot label an authenticator's entry.
    InvalidAccountName,
    /// 400 `passkey_invalid`: the authenticator's answer to a registration did not verify.
    PasskeyInvalid,
    /// 409 `passkey_already_registered`: that credential is someone's passkey already.
    PasskeyAlreadyRegistered,
    /// 409 `passkey_name_taken` naming the field `name`: another passkey of the account has
    /// this name (in any case, once trimmed).
    PasskeyNameTaken,
    /// 404 `passkey_not_found`: no such passkey of this account.
    PasskeyNotFound,
    /// The account lacks the admin role (`admin.role`).
    NotAdministrator,
    /// The session's second factor was proven longer ago than `admin.max_auth_age`, or never.
    StepUpRequired,
    /// An administrator tried, through the admin API or console, what would lock them out
    /// of their own account.
    OwnAccount,
    /// 403 `registration_closed` or `invitation_required`: `[registration]` does not let
    /// this address register by itself.
    RegistrationRefused(Refusal),
    /// 400 `validation_error` naming one field: a step-up's wrong password or code.
    Field {
        /// The request field that was wrong (e.g. `current_password`).
        field: &'static str,
        /// What is wrong with it, for the caller: a sentence naming the field.
        message: String,
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
    /// `Field` naming `field`, told as its label then `predicate` (`is required`):
    /// [`FieldError::named`].
    pub fn field(field: &'static str, predicate: &str) -> Self {
        Self::Field {
            field,
            message: FieldError::named(field, predicate).message,
        }
    }

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
            Self::InvalidCredentials
            | Self::PasskeyRefused
            | Self::WrongSecondFactor(_)
            | Self::CodeReplayed(_) => "failure",
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
            Self::CodeReplayed(_) => "code_replayed",
            Self::PendingExpired => "sign_in_expired",
            Self::SessionNotFound => "session_not_found",
            Self::AccountNotFound => "not_found",
            Self::InvalidLink => "invalid_token",
            Self::AlreadyVerified => "already_verified",
            Self::Locked => "account_locked",
            Self::Busy => "service_unavailable",
            Self::Deactivated => "account_deactivated",
            Self::SecondFactorRequired(_) => "two_factor_required",
            Self::InvalidRefreshToken => "invalid_token",
            Self::RefreshTokenReused => "refresh_token_reused",
            Self::PasskeyRefused => "passkey_refused",
            Self::CeremonyInvalid => "ceremony_invalid",
            Self::PasskeysDisabled => "passkeys_disabled",
            Self::EmailNotVerified(_) => "email_not_verified",
            Self::TwoFactorAlreadyEnabled => "two_factor_already_enabled",
            Self::TwoFactorNotEnabled => "two_factor_not_enabled",
            Self::InvalidAccountName => "invalid_account_name",
            Self::PasskeyInvalid => "passkey_invalid",
            Self::PasskeyAlreadyRegistered => "passkey_already_registered",
            Self::PasskeyNameTaken => "passkey_name_taken",
            Self::PasskeyNotFound => "passkey_not_found",
            Self::NotAdministrator => "forbidden",
            Self::StepUpRequired => "step_up_required",
            Self::OwnAccount => "own_account",
            Self::RegistrationRefused(refusal) => refusal.code(),
            Self::Field { .. } | Self::Invalid(_) => "validation_error",
            Self::Store(StoreError::Unavailable(_))
            | Self::Session(SessionError::Unavailable(_)) => "service_unavailable",
            Self::Store(StoreError::DuplicateEmail) => "email_taken",
            Self::Store(StoreError::DuplicatePasskey) => "passkey_already_registered",
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

impl AccountError {
    /// The status and English message of a refusal whose answer is the plain error envelope
    /// (its `code` is [`AccountError::catalogue_key`]); `None` for those answered otherwise.
    fn plain_refusal(&self) -> Option<(StatusCode, &'static str)> {
        use StatusCode as S;
        Some(match self {
            Self::InvalidCredentials | Self::WrongSecondFactor(_) => (
                S::UNAUTHORIZED,
                "The email address or password is not right.",
            ),
            Self::CodeReplayed(_) => (S::UNAUTHORIZED, super::proof::CODE_REPLAYED),
            Self::Locked => (
                S::LOCKED,
                "The account is locked for a while after too many failed attempts. Try again later.",
            ),
            Self::Deactivated => (S::FORBIDDEN, "This account has been deactivated."),
            Self::SessionNotFound => (S::NOT_FOUND, "This account has no such session."),
            Self::InvalidLink => (
                S::BAD_REQUEST,
                "The link is invalid, already used or expired.",
            ),
            Self::AlreadyVerified => (S::BAD_REQUEST, "The email address is already verified."),
            Self::PendingExpired => (
                S::BAD_REQUEST,
                "The sign-in took too long or was already finished. Sign in again.",
            ),
            Self::PasskeyRefused => (S::UNAUTHORIZED, "The passkey could not be verified."),
            Self::CeremonyInvalid => (
                S::BAD_REQUEST,
                "The passkey request has expired or was already used. Start again.",
            ),
            Self::PasskeysDisabled => (S::NOT_FOUND, "Passkeys are not available on this server."),
            Self::TwoFactorAlreadyEnabled => (
                S::CONFLICT,
                "Two-factor authentication is already on. To replace it, send your password \
                 with a current code or a recovery code.",
            ),
            Self::TwoFactorNotEnabled => (S::BAD_REQUEST, "Two-factor authentication is not on."),
            Self::InvalidAccountName => (
                S::BAD_REQUEST,
                "This email address cannot name the account in an authenticator app.",
            ),
            Self::PasskeyInvalid => (
                S::BAD_REQUEST,
                "The authenticator's answer could not be verified.",
            ),
            Self::PasskeyAlreadyRegistered => (S::CONFLICT, "This passkey is already registered."),
            Self::PasskeyNotFound => (S::NOT_FOUND, "This account has no such passkey."),
            Self::NotAdministrator => (S::FORBIDDEN, "This needs the administrator role."),
            Self::StepUpRequired => (
                S::FORBIDDEN,
                "Prove your second factor again (POST /api/admin/step-up) to use the admin API.",
            ),
            Self::OwnAccount => (
                S::CONFLICT,
                "An administrator cannot do this to their own account here. Use the account page.",
            ),
            _ => return None,
        })
    }
}

impl From<AccountError> for Reply {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::Busy => Reply::unavailable("sign-in check"),
            AccountError::SecondFactorRequired(step) => second_factor_required(*step),
            AccountError::AccountNotFound => Reply::not_found(),
            AccountError::InvalidRefreshToken => unauthorized(
                "invalid_token",
                "The refresh token is invalid or has expired.",
            ),
            AccountError::RefreshTokenReused => unauthorized(
                "refresh_token_reused",
                "The refresh token was already used, so the session has ended.",
            ),
            AccountError::EmailNotVerified(message) => {
                Reply::error(StatusCode::FORBIDDEN, "email_not_verified", message)
            }
            AccountError::RegistrationRefused(refusal) => registration_refused(refusal),
            AccountError::PasskeyNameTaken => passkey_name_taken(),
            AccountError::Field { field, message } => {
                Reply::validation(&[FieldError::new(field, message)])
            }
            AccountError::Invalid(errors) => Reply::validation(&errors),
            AccountError::Store(e) => e.into(),
            AccountError::Session(e) => e.into(),
            AccountError::Password(e) => e.into(),
            AccountError::Internal { context, cause } => Reply::internal(context, &cause),
            refusal => match refusal.plain_refusal() {
                Some((status, message)) => Reply::error(status, refusal.catalogue_key(), message),
                None => Reply::internal("mapping an account refusal", &format!("{refusal:?}")),
            },
        }
    }
}

/// What the field `name` is told when another passkey of the account has that name.
pub const PASSKEY_NAME_TAKEN: &str = "You already have a passkey with this name; choose another.";

/// 409 `passkey_name_taken`, its `errors` naming the field `name`.
fn passkey_name_taken() -> Reply {
    let mut response = Reply::error(
        StatusCode::CONFLICT,
        "passkey_name_taken",
        PASSKEY_NAME_TAKEN,
    );
    if let crate::reply::Body::Json(body) = &mut response.body {
        body["errors"] = json!([{"field": "name", "message": PASSKEY_NAME_TAKEN}]);
    }
    response
}

/// 403 `registration_closed` or `invitation_required`: what the caller can do instead.
fn registration_refused(refusal: Refusal) -> Reply {
    let message = match refusal {
        Refusal::Closed | Refusal::DomainNotAllowed => {
            "Registration is closed for this address. Ask an administrator for an account."
        }
        Refusal::InvitationRequired => {
            "Registration is by invitation only. Ask an administrator for an invitation."
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
        "A second factor is required: a two-factor code or a passkey.",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::sentence_problem;

    /// Every refusal the core answers by itself says so in sentences (ARCHITECTURE.md,
    /// "Messages"); its `code` stays the catalogue key.
    #[test]
    fn every_refusal_is_told_in_sentences() {
        let refusals = [
            AccountError::InvalidCredentials,
            AccountError::Locked,
            AccountError::Busy,
            AccountError::Deactivated,
            AccountError::CodeReplayed(None),
            AccountError::PendingExpired,
            AccountError::SessionNotFound,
            AccountError::AccountNotFound,
            AccountError::InvalidLink,
            AccountError::AlreadyVerified,
            AccountError::InvalidRefreshToken,
            AccountError::RefreshTokenReused,
            AccountError::PasskeyRefused,
            AccountError::CeremonyInvalid,
            AccountError::PasskeysDisabled,
            AccountError::EmailNotVerified("Verify your email address first."),
            AccountError::TwoFactorAlreadyEnabled,
            AccountError::TwoFactorNotEnabled,
            AccountError::InvalidAccountName,
            AccountError::PasskeyInvalid,
            AccountError::PasskeyAlreadyRegistered,
            AccountError::PasskeyNameTaken,
            AccountError::PasskeyNotFound,
            AccountError::NotAdministrator,
            AccountError::StepUpRequired,
            AccountError::OwnAccount,
            AccountError::RegistrationRefused(Refusal::Closed),
            AccountError::RegistrationRefused(Refusal::DomainNotAllowed),
            AccountError::RegistrationRefused(Refusal::InvitationRequired),
            AccountError::field("current_password", "is incorrect"),
            AccountError::Store(StoreError::DuplicateEmail),
            AccountError::Store(StoreError::DuplicatePasskey),
            AccountError::Store(StoreError::NotFound),
            AccountError::Store(StoreError::Unavailable("down".into())),
            AccountError::Session(SessionError::Unavailable("down".into())),
        ];
        for refusal in refusals {
            let what = format!("{refusal:?}");
            let reply = Reply::from(refusal);
            let body = reply.body_json();
            let message = body["message"].as_str().unwrap_or_default();
            assert_eq!(sentence_problem(message), None, "{what}: {message:?}");
            for error in body["errors"].as_array().into_iter().flatten() {
                let message = error["message"].as_str().unwrap_or_default();
                assert_eq!(sentence_problem(message), None, "{what}: {message:?}");
            }
        }
    }
}
