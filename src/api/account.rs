//! Account lifecycle: registration, email verification, password reset. The handlers read
//! the JSON body, hand its text to the account core's field rules and operations
//! (`accounts/fields.rs`, `accounts/registration.rs`) and answer the envelope.

use http::StatusCode;
use serde_json::{Value, json};

use super::{ApiRequest, Fields, Reply};
use crate::accounts::{InvitationForm, Registration, ResetForm};
use crate::app::App;
use crate::store::User;

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

/// `POST /api/auth/register`
pub async fn register(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    // `[registration]`: `closed` and `invite` before the body is read; the core asks again,
    // and about the address's domain, before anything is written or mailed.
    let client = super::client(app, request);
    app.accounts.registration_open(&client)?;
    let mut f = Fields::from_request(request)?;
    let form = Registration {
        email: &f.text("email"),
        password: &f.text("password"),
        first_name: &f.text("first_name"),
        last_name: &f.text("last_name"),
    };
    let account = form.parse_after(f.found())?;
    let user = app.accounts.register(account, &client).await?;
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

/// `POST /api/auth/accept-invitation` — creates the invitee's account with the invitation's
/// address (proven) and roles, whatever `[registration]` says; an `email`, if sent, must be
/// that address.
pub async fn accept_invitation(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let mut f = Fields::from_request(request)?;
    let token = f.text("token");
    let email = f.text("email");
    let form = InvitationForm {
        email: Some(email.as_str()),
        password: &f.text("password"),
        first_name: &f.text("first_name"),
        last_name: &f.text("last_name"),
    };
    let mut found = f.found();
    let token = found.required("token", &token).map(str::to_owned);
    let account = form.parse_after(found)?;
    let token = token.unwrap_or_default();
    let client = super::client(app, request);
    let user = app
        .accounts
        .accept_invitation(&token, account, &client)
        .await?;
    Ok(Reply::ok(
        StatusCode::CREATED,
        "The account was created. Please sign in.",
        Some(json!({"user": user_profile(&user)})),
    ))
}

/// `POST /api/auth/verify-email`
pub async fn verify_email(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let mut f = Fields::from_request(request)?;
    let token = f.required("token");
    let token = f.finish_with(token)?;
    app.accounts.verify_email(&token).await?;
    Ok(Reply::ok(
        StatusCode::OK,
        "The email address was verified.",
        None,
    ))
}

/// `POST /api/auth/resend-verification`
pub async fn resend_verification(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    let client = super::client(app, request);
    app.accounts
        .resend_verification(&caller.user, &client)
        .await?;
    Ok(Reply::ok(
        StatusCode::OK,
        "A verification email was sent.",
        None,
    ))
}

/// `POST /api/auth/request-password-reset` — the same answer whether or not the account
/// exists, and as fast (`Accounts::request_password_reset` looks nothing up before it).
pub async fn request_password_reset(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let mut f = Fields::from_request(request)?;
    let email = f.text("email");
    let mut found = f.found();
    let email = found.email("email", &email);
    let email = found.finish_with(email)?;
    app.accounts
        .request_password_reset(email, &super::client(app, request));
    Ok(Reply::ok(
        StatusCode::OK,
        "If an account exists for this email address, a password reset link has been sent.",
        None,
    ))
}

/// `POST /api/auth/reset-password` — sets a new password and ends every session.
pub async fn reset_password(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let mut f = Fields::from_request(request)?;
    let form = ResetForm {
        token: &f.text("token"),
        password: &f.text("password"),
    };
    let (token, password) = form.parse_after(f.found())?;
    let client = super::client(app, request);
    app.accounts
        .reset_password(token, password, &client)
        .await?;
    Ok(Reply::ok(
        StatusCode::OK,
        "The password has been reset. Please sign in.",
        None,
    ))
}
