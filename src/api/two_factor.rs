//! TOTP second factor: setup, enable and disable (the check at login is the account
//! core's, `crate::accounts`).
//!
//! Changing a second factor is a step-up: with 2FA on, replacing it (`setup-2fa`,
//! `enable-2fa`) or turning it off (`disable-2fa`) needs the password and a current code
//! or recovery code, counted against the lockout; an access token alone is refused.
//! Turning 2FA on ends the user's other sessions, which never passed it.

use std::time::{SystemTime, UNIX_EPOCH};

use http::StatusCode;
use serde_json::json;

use super::{ApiRequest, FieldError, Fields, Reply};
use crate::access::credentials::Caller;
use crate::app::App;
use crate::auth::totp::{
    REPLAY_TTL, TotpError, TotpSecret, generate_recovery_codes, hash_recovery_code, replay_key,
    verify_code,
};
use crate::mail::MailKind;
use crate::store::User;
use crate::telemetry::SECURITY;

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A logged-in caller with a verified email, or the refusal: 403 `email_not_verified`
/// with `refusal` as its message (what the caller must verify the address before).
pub(super) async fn verified_caller(
    app: &App,
    request: &ApiRequest,
    refusal: &str,
) -> Result<Caller, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    if !caller.user.is_verified {
        return Err(Reply::error(
            StatusCode::FORBIDDEN,
            "email_not_verified",
            refusal,
        ));
    }
    Ok(caller)
}

const TWO_FACTOR_NEEDS_VERIFIED_EMAIL: &str =
    "Verify your email address before setting up two-factor authentication";

/// With 2FA already on, a new second factor needs the step-up (password and a current
/// code); without a password in the body the answer is 409 `two_factor_already_enabled`.
async fn replacement_allowed(app: &App, request: &ApiRequest, user: &User) -> Result<(), Reply> {
    if !user.two_factor_enabled {
        return Ok(());
    }
    let has_password = Fields::from_request(request)?
        .optional("password")
        .is_some_and(|p| !p.is_empty());
    if !has_password {
        return Err(Reply::error(
            StatusCode::CONFLICT,
            "two_factor_already_enabled",
            "Two-factor authentication is already on; send password and two_factor_code \
             (a current or recovery code) to replace it",
        ));
    }
    super::profile::step_up(app, request, user, "password", true)
        .await
        .inspect_err(|_| {
            tracing::warn!(target: SECURITY, event = "two_factor_replace_refused", user_id = %user.id);
        })
}

/// `POST /api/auth/setup-2fa` — a fresh secret to scan; nothing is stored yet.
pub async fn setup(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = verified_caller(app, request, TWO_FACTOR_NEEDS_VERIFIED_EMAIL).await?;
    replacement_allowed(app, request, &caller.user).await?;
    Ok(match app.two_factor.setup(caller.user.email.as_str()) {
        Ok(p) => Reply::ok(
            StatusCode::OK,
            "Scan the QR code with your authenticator app, then confirm with a code",
            Some(json!({
                "secret": p.secret_base32,
                "otpauth_url": p.otpauth_url,
                "qr_code": p.qr_code_data_url,
            })),
        ),
        Err(TotpError::InvalidAccountName) => Reply::error(
            StatusCode::BAD_REQUEST,
            "invalid_account_name",
            "This email address cannot be used as an authenticator account name",
        ),
        Err(e) => Reply::internal("two-factor setup", &e),
    })
}

/// `POST /api/auth/enable-2fa` `{secret, token}` — turns 2FA on and returns recovery codes once.
pub async fn enable(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = verified_caller(app, request, TWO_FACTOR_NEEDS_VERIFIED_EMAIL).await?;
    let mut f = Fields::from_request(request)?;
    let secret = f.required("secret");
    let token = f.required("token");
    let secret = secret.and_then(|s| match TotpSecret::from_base32(&s) {
        Ok(secret) => Some(secret),
        Err(e) => {
            f.reject("secret", e.to_string());
            None
        }
    });
    let (secret, token) = f.finish_with(secret.zip(token))?;
    let user = &caller.user;
    // A second factor is a security change like a password: turning it on takes the
    // password, so a stolen access token cannot lock the owner out behind a factor the
    // thief holds. Replacing one takes a current code too.
    let allowed = if user.two_factor_enabled {
        replacement_allowed(app, request, user).await
    } else {
        super::profile::step_up(app, request, user, "password", false).await
    };
    allowed?;
    let Some(step) = verify_code(secret.as_bytes(), &token, now_unix()) else {
        return Err(Reply::validation(&[FieldError::new(
            "token",
            "is not the current code for this secret",
        )]));
    };
    // The code that enabled 2FA cannot be replayed at login.
    app.sessions
        .claim_once(&replay_key(user.id, step), REPLAY_TTL)
        .await?;
    let sealed = match app.two_factor.secret_box().seal_secret(user.id, &secret) {
        Ok(sealed) => sealed,
        Err(e) => return Err(Reply::internal("sealing a TOTP secret", &e)),
    };
    let codes = generate_recovery_codes();
    let hashes: Vec<String> = codes
        .iter()
        .map(|c| hash_recovery_code(user.id, c))
        .collect();
    app.store.set_two_factor(user.id, Some(sealed)).await?;
    app.store.replace_recovery_codes(user.id, &hashes).await?;
    // Sessions that never passed the new second factor must not outlive its arrival: one
    // of them could otherwise turn it off again.
    let ended = app
        .access
        .revoke_user(caller.session.user_id, Some(&caller.session.id))
        .await?
        .len();
    tracing::info!(target: SECURITY, event = "two_factor_enabled", user_id = %user.id, replaced = user.two_factor_enabled, sessions_ended = ended);
    app.mailer.send_in_background_in(
        super::mail_language(app, request, user),
        user.email.as_str(),
        &user.first_name,
        MailKind::TwoFactorEnabled,
    );
    Ok(Reply::ok(
        StatusCode::OK,
        "Two-factor authentication enabled. Store the recovery codes safely: they are shown once.",
        Some(json!({"recovery_codes": codes})),
    ))
}

/// `POST /api/auth/disable-2fa` `{password, two_factor_code}` — turns 2FA off and forgets
/// the secret and codes; the code (a current or recovery code) is required while 2FA is on.
pub async fn disable(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = verified_caller(app, request, TWO_FACTOR_NEEDS_VERIFIED_EMAIL).await?;
    let user = &caller.user;
    if let Err(e) = super::profile::step_up(app, request, user, "password", true).await {
        tracing::warn!(target: SECURITY, event = "two_factor_disable_refused", user_id = %user.id);
        return Err(e);
    }
    if !user.two_factor_enabled {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            "two_factor_not_enabled",
            "Two-factor authentication is not enabled",
        ));
    }
    app.store.set_two_factor(user.id, None).await?;
    tracing::info!(target: SECURITY, event = "two_factor_disabled", user_id = %user.id);
    app.mailer.send_in_background_in(
        super::mail_language(app, request, user),
        user.email.as_str(),
        &user.first_name,
        MailKind::TwoFactorDisabled,
    );
    Ok(Reply::ok(
        StatusCode::OK,
        "Two-factor authentication disabled",
        None,
    ))
}
