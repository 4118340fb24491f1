//! Account lifecycle: registration, email verification, password reset.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use http::StatusCode;
use serde_json::{Value, json};

use super::{ApiRequest, Fields, Reply};
use crate::accounts::AccountError;
use crate::app::App;
use crate::auth::secrets::{is_token_shaped, random_token, sha256_hex};
use crate::config::Refusal;
use crate::domain::{Email, Password};
use crate::mail::MailKind;
use crate::store::{NewToken, NewUser, StoreError, TokenKind, User, UserStore};
use crate::telemetry::SECURITY;

/// How long an email-verification link works.
pub const VERIFICATION_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a password-reset link works.
pub const RESET_TTL: Duration = Duration::from_secs(3600);
/// Longest first or last name accepted.
const MAX_NAME_CHARS: usize = 100;

/// The user as registration and login show it.
pub fn user_summary(user: &User) -> Value {
    json!({
        "id": user.id.to_string(),
        "email": user.email.as_str(),
        "first_name": user.first_name,
        "last_name": user.last_name,
        "is_verified": user.is_verified,
        "two_factor_enabled": user.two_factor_enabled,
    })
}

/// The user as the profile shows it.
pub fn user_profile(user: &User) -> Value {
    json!({
        "id": user.id.to_string(),
        "email": user.email.as_str(),
        "first_name": user.first_name,
        "last_name": user.last_name,
        "is_verified": user.is_verified,
        "is_active": user.is_active,
        "two_factor_enabled": user.two_factor_enabled,
        "roles": user.roles,
        "last_login": user.last_login,
        "created_at": user.created_at,
    })
}

/// Checks a first or last name, recording a field error when it is unfit.
pub fn check_name(fields: &mut Fields, field: &str, value: &str) {
    check_display_text(fields, field, value, MAX_NAME_CHARS);
}

/// Checks text shown to people (names of users and passkeys): at most `max_chars`
/// characters, no control characters, and none that is invisible or changes direction, so
/// that one cannot pose as another in a mail or on a page (Unicode TR #36 §2.2). Records
/// the first rule broken as a field error; `true` when the text is fit.
pub(super) fn check_display_text(
    fields: &mut Fields,
    field: &str,
    value: &str,
    max_chars: usize,
) -> bool {
    let problem = if value.chars().count() > max_chars {
        format!("must be at most {max_chars} characters")
    } else if value.chars().any(char::is_control) {
        "must not contain control characters".to_owned()
    } else if value.chars().any(is_invisible_format) {
        "must not contain invisible or direction-changing characters".to_owned()
    } else {
        return true;
    };
    fields.reject(field, problem);
    false
}

/// Unicode format characters (general category Cf) that are invisible or change text
/// direction: the soft hyphen, bidirectional marks, embeddings, overrides and isolates,
/// zero-width characters, invisible operators, the byte-order mark and interlinear
/// annotation controls.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// Parses an email field, recording a field error when it is unfit.
fn parse_email(fields: &mut Fields, value: Option<String>) -> Option<Email> {
    let value = value?;
    match Email::parse(&value) {
        Ok(email) => Some(email),
        Err(e) => {
            fields.reject("email", e.to_string());
            None
        }
    }
}

/// Parses a new password against the policy, recording every rule it breaks.
pub fn parse_new_password(
    fields: &mut Fields,
    field: &str,
    value: Option<String>,
) -> Option<Password> {
    let value = value?;
    match Password::parse(value) {
        Ok(password) => Some(password),
        Err(e) => {
            for message in e.messages() {
                fields.reject(field, message);
            }
            None
        }
    }
}

/// Creates a single-use token of `kind` for `user` and returns its plaintext (to mail).
async fn issue_mail_token(
    app: &App,
    user: &User,
    kind: TokenKind,
    ttl: Duration,
) -> Result<String, Reply> {
    Ok(issue_token(&*app.store, user, kind, ttl).await?)
}

/// Replaces `user`'s unused tokens of `kind` with a new one, in one transaction, and
/// returns its plaintext (to mail once the store has it).
async fn issue_token(
    store: &dyn UserStore,
    user: &User,
    kind: TokenKind,
    ttl: Duration,
) -> Result<String, StoreError> {
    let (token, stored) = new_token(kind, ttl);
    store.replace_token(user.id, stored).await?;
    Ok(token)
}

/// A fresh random token of `kind` valid for `ttl`: its plaintext and what the store keeps.
fn new_token(kind: TokenKind, ttl: Duration) -> (String, NewToken) {
    let token = random_token();
    let expires_at =
        Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(1));
    let stored = NewToken {
        kind,
        token_hash: sha256_hex(&token),
        expires_at,
    };
    (token, stored)
}

fn invalid_token() -> Reply {
    Reply::error(
        StatusCode::BAD_REQUEST,
        "invalid_token",
        "The link is invalid, already used or expired",
    )
}

/// `POST /api/auth/register`
pub async fn register(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    // `[registration]` is asked before anything is written or mailed: `closed` and
    // `invite` before the body is read, `domains` as soon as the address is known.
    let policy = &app.config.registration;
    if let Some(refusal) = policy.refuses_everyone() {
        return Err(registration_refused(request, refusal));
    }
    let mut f = Fields::from_request(request)?;
    let email = f.required("email");
    let email = parse_email(&mut f, email);
    if let Some(email) = &email {
        policy
            .admits(email)
            .map_err(|refusal| registration_refused(request, refusal))?;
    }
    let password = f.required_raw("password");
    let password = parse_new_password(&mut f, "password", password);
    let first_name = f.required("first_name");
    let last_name = f.required("last_name");
    for (field, value) in [("first_name", &first_name), ("last_name", &last_name)] {
        if let Some(v) = value {
            check_name(&mut f, field, v);
        }
    }
    let ((email, password), (first_name, last_name)) =
        f.finish_with(email.zip(password).zip(first_name.zip(last_name)))?;
    let password_hash = app.hasher.hash(password.expose()).await?;
    // The account and its verification token are one transaction: a storage failure
    // leaves neither (503, and a retry with the same address works), and the mail goes
    // out only once both are stored.
    let (token, stored) = new_token(TokenKind::EmailVerification, VERIFICATION_TTL);
    let new = NewUser {
        email: email.clone(),
        password_hash,
        first_name,
        last_name,
        language: super::request_language(app, request).to_owned(),
    };
    let user = match app.store.create_user_with_token(new, stored).await {
        Ok(user) => user,
        Err(StoreError::DuplicateEmail) => {
            offer_pending_address(app, request, &email);
            return Err(StoreError::DuplicateEmail.into());
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(target: SECURITY, event = "user_registered", user_id = %user.id, client_ip = %request.client_ip);
    app.mailer.send_in_background_in(
        super::mail_language(app, request, &user),
        user.email.as_str(),
        &user.first_name,
        MailKind::Verification {
            token,
            expires_in: VERIFICATION_TTL,
        },
    );
    Ok(Reply::ok(
        StatusCode::CREATED,
        "User registered successfully. Please check your email for verification.",
        Some(json!({"user": {
            "id": user.id.to_string(),
            "email": user.email.as_str(),
            "first_name": user.first_name,
            "last_name": user.last_name,
            "is_verified": false,
        }})),
    ))
}

/// The 403 of a registration `[registration]` turns away, logged without the address.
fn registration_refused(request: &ApiRequest, refusal: Refusal) -> Reply {
    tracing::info!(target: SECURITY, event = "registration_refused", reason = refusal.code(), client_ip = %request.client_ip);
    AccountError::from(refusal).into()
}

/// `POST /api/auth/verify-email`
pub async fn verify_email(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let mut f = Fields::from_request(request)?;
    let token = f.required("token");
    f.finish()?;
    let Some(token) = token.filter(|t| is_token_shaped(t)) else {
        return Err(invalid_token());
    };
    // The token, the verified flag and the change feed's entry are one transaction: a
    // failure answers 503 and leaves the link usable.
    let user_id = match app.store.verify_address(&sha256_hex(&token)).await {
        Ok(Some(id)) => id,
        Ok(None) => return Err(invalid_token()),
        Err(e) => return Err(e.into()),
    };
    // Routes that require a verified address must let the user in at once, here and on
    // every other instance (which learn it from the change feed).
    app.access.forget_user(user_id);
    tracing::info!(target: SECURITY, event = "email_verified", user_id = %user_id);
    Ok(Reply::ok(
        StatusCode::OK,
        "Email verified successfully",
        None,
    ))
}

/// `POST /api/auth/resend-verification`
pub async fn resend_verification(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    if caller.user.is_verified {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            "already_verified",
            "Email is already verified",
        ));
    }
    let token = issue_mail_token(
        app,
        &caller.user,
        TokenKind::EmailVerification,
        VERIFICATION_TTL,
    )
    .await?;
    app.mailer.send_in_background_in(
        super::mail_language(app, request, &caller.user),
        caller.user.email.as_str(),
        &caller.user.first_name,
        MailKind::Verification {
            token,
            expires_in: VERIFICATION_TTL,
        },
    );
    Ok(Reply::ok(StatusCode::OK, "Verification email sent", None))
}

/// `POST /api/auth/request-password-reset` — the same answer whether or not the account exists.
pub async fn request_password_reset(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let mut f = Fields::from_request(request)?;
    let email = f.required("email");
    let email = parse_email(&mut f, email);
    f.finish()?;
    let answer = Reply::ok(
        StatusCode::OK,
        "If an account exists for this email, a password reset link has been sent",
        None,
    );
    let Some(email) = email else {
        return Ok(answer);
    };
    // Nothing about the account happens before the answer: the lookup, the token and the
    // mail all run afterwards on the backend runtime, so neither the answer nor its timing
    // tells whether the account exists. A failure is logged, like any mail failure.
    let store = Arc::clone(&app.store);
    let mailer = Arc::clone(&app.mailer);
    let client_ip = request.client_ip;
    // The page's language, for an account that has none of its own yet.
    let page_language = super::request_language(app, request).to_owned();
    app.backend.spawn(async move {
        let user = match store.find_by_email(&email).await {
            Ok(Some(user)) if user.is_active => user,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not look up an account for a password reset");
                return;
            }
        };
        tracing::info!(target: SECURITY, event = "password_reset_requested", user_id = %user.id, client_ip = %client_ip);
        match issue_token(&*store, &user, TokenKind::PasswordReset, RESET_TTL).await {
            Ok(token) => mailer.send_in_background_in(
                if user.language.is_empty() {
                    &page_language
                } else {
                    &user.language
                },
                user.email.as_str(),
                &user.first_name,
                MailKind::PasswordReset {
                    token,
                    expires_in: RESET_TTL,
                },
            ),
            Err(e) => {
                tracing::warn!(error = %e, user_id = %user.id, "could not issue a password reset token")
            }
        }
    });
    Ok(answer)
}

/// A registration for an address whose account was never verified: whoever registered it
/// first need not own the mailbox (pre-registration hijacking), so its verification link
/// must not be what the owner gets. The owner gets a password-reset link instead: using it
/// sets their password, proves the address and ends every session the first registrant
/// holds. Runs after the answer, on the backend runtime; a verified account gets nothing.
fn offer_pending_address(app: &App, request: &ApiRequest, email: &Email) {
    let store = Arc::clone(&app.store);
    let mailer = Arc::clone(&app.mailer);
    let email = email.clone();
    let page_language = super::request_language(app, request).to_owned();
    app.backend.spawn(async move {
        let user = match store.find_by_email(&email).await {
            Ok(Some(user)) if user.is_active && !user.is_verified => user,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not look up a pending registration");
                return;
            }
        };
        tracing::info!(target: SECURITY, event = "pending_registration_claimed", user_id = %user.id);
        match issue_token(&*store, &user, TokenKind::PasswordReset, RESET_TTL).await {
            Ok(token) => mailer.send_in_background_in(
                &page_language,
                user.email.as_str(),
                "",
                MailKind::PasswordReset {
                    token,
                    expires_in: RESET_TTL,
                },
            ),
            Err(e) => {
                tracing::warn!(error = %e, user_id = %user.id, "could not issue a password reset token")
            }
        }
    });
}

/// `POST /api/auth/reset-password` — sets a new password and ends every session.
pub async fn reset_password(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let mut f = Fields::from_request(request)?;
    let token = f.required("token");
    let password = f.required_raw("password");
    let password = parse_new_password(&mut f, "password", password);
    let (token, password) = f.finish_with(token.zip(password))?;
    if !is_token_shaped(&token) {
        return Err(invalid_token());
    }
    // The token is checked (and spent) before bcrypt runs, so requests without a valid
    // token cost no hashing: they cannot be used to slow everyone's logins down. Should
    // hashing then fail (503), the user asks for a new link.
    let user_id = match app
        .store
        .consume_token(TokenKind::PasswordReset, &sha256_hex(&token))
        .await
    {
        Ok(Some(id)) => id,
        Ok(None) => return Err(invalid_token()),
        Err(e) => return Err(e.into()),
    };
    let password_hash = app.hasher.hash(password.expose()).await?;
    // One statement: the new password, the address proven (the link came to the mailbox,
    // and a pending registration made by someone else with this address is now the
    // mailbox owner's, with their password) and the lockout cleared, or none of it.
    app.store.reset_password(user_id, &password_hash).await?;
    let ended = app.access.revoke_user(user_id, None).await?.len();
    tracing::info!(target: SECURITY, event = "password_reset", user_id = %user_id, sessions_ended = ended);
    if let Ok(Some(user)) = app.store.find_by_id(user_id).await {
        app.mailer.send_in_background_in(
            super::mail_language(app, request, &user),
            user.email.as_str(),
            &user.first_name,
            MailKind::PasswordChanged,
        );
    }
    Ok(Reply::ok(
        StatusCode::OK,
        "Password has been reset; please log in",
        None,
    ))
}
