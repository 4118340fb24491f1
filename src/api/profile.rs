//! The logged-in user's own account: profile, password, deactivation, sessions.

use http::StatusCode;
use serde_json::json;

use super::account::{check_name, parse_new_password, user_profile};
use super::{ApiRequest, Fields, Reply};
use crate::accounts::{AccountError, StepUp};
use crate::app::App;
use crate::mail::MailKind;
use crate::session::SessionId;
use crate::store::User;
use crate::telemetry::SECURITY;

/// `GET /api/auth/profile`
pub async fn get_profile(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    Ok(Reply::ok(
        StatusCode::OK,
        "Profile retrieved",
        Some(json!({"user": user_profile(&caller.user)})),
    ))
}

/// `PATCH /api/auth/profile`
pub async fn update_profile(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    let mut f = Fields::from_request(request)?;
    let first_name = f.optional("first_name");
    let last_name = f.optional("last_name");
    for (field, value) in [("first_name", &first_name), ("last_name", &last_name)] {
        match value {
            Some(v) if v.is_empty() => f.reject(field, "must not be empty"),
            Some(v) => check_name(&mut f, field, v),
            None => {}
        }
    }
    f.finish()?;
    let user = app
        .store
        .update_profile(caller.user.id, first_name, last_name)
        .await?
        .ok_or_else(Reply::not_found)?;
    Ok(Reply::ok(
        StatusCode::OK,
        "Profile updated",
        Some(json!({"user": user_profile(&user)})),
    ))
}

/// Proves that the caller is the account's owner right now, before a security change
/// (`Accounts::step_up`): the password in `password_field` and, with `with_code` and 2FA
/// on, a current TOTP or recovery code in `two_factor_code`. 423 once the account is
/// locked, 400 naming the wrong field.
pub(super) async fn step_up(
    app: &App,
    request: &ApiRequest,
    user: &User,
    password_field: &'static str,
    with_code: bool,
) -> Result<(), Reply> {
    let need_code = with_code && user.two_factor_enabled;
    let mut f = Fields::from_request(request)?;
    let password = f.required_raw(password_field);
    let code = if need_code {
        f.required("two_factor_code")
    } else {
        None
    };
    let password = f.finish_with(password)?;
    let proof = StepUp {
        password: &password,
        password_field,
        code: code.as_deref(),
    };
    let client = super::client(app, request);
    Ok(app.accounts.step_up(user, proof, &client).await?)
}

/// `POST /api/auth/change-password` — ends the user's other sessions.
pub async fn change_password(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    let mut f = Fields::from_request(request)?;
    let current = f.required_raw("current_password");
    let new = f.required_raw("new_password");
    let new = parse_new_password(&mut f, "new_password", new);
    // The current password is checked (and counted) by the step-up below.
    let (_, new) = f.finish_with(current.zip(new))?;
    if let Err(e) = step_up(app, request, &caller.user, "current_password", false).await {
        tracing::warn!(target: SECURITY, event = "password_change_refused", user_id = %caller.user.id);
        return Err(e);
    }
    let hash = app.hasher.hash(new.expose()).await?;
    app.store.set_password_hash(caller.user.id, &hash).await?;
    let ended = app
        .access
        .revoke_user(caller.session.user_id, Some(&caller.session.id))
        .await?
        .len();
    tracing::info!(target: SECURITY, event = "password_changed", user_id = %caller.user.id, sessions_ended = ended);
    app.mailer.send_in_background_in(
        super::mail_language(app, request, &caller.user),
        caller.user.email.as_str(),
        &caller.user.first_name,
        MailKind::PasswordChanged,
    );
    Ok(Reply::ok(
        StatusCode::OK,
        "Password changed; other sessions have been ended",
        None,
    ))
}

/// `POST /api/auth/deactivate` — the account goes inactive and every session ends.
pub async fn deactivate(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    if let Err(e) = step_up(app, request, &caller.user, "password", false).await {
        tracing::warn!(target: SECURITY, event = "deactivation_refused", user_id = %caller.user.id);
        return Err(e);
    }
    app.store.set_active(caller.user.id, false).await?;
    let ended = app
        .access
        .revoke_user(caller.session.user_id, None)
        .await?
        .len();
    tracing::info!(target: SECURITY, event = "account_deactivated", user_id = %caller.user.id, sessions_ended = ended);
    Ok(Reply::ok(StatusCode::OK, "Account deactivated", None))
}

/// `GET /api/auth/sessions` — the caller's live sessions.
pub async fn list_sessions(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    let sessions = app.accounts.sessions_of(&caller.user).await?;
    let sessions: Vec<_> = sessions
        .iter()
        .map(|s| {
            json!({
                "id": s.id.to_string(),
                "created_at": s.created_at,
                "last_seen_at": s.last_seen_at,
                "expires_at": s.expires_at,
                "ip": s.ip,
                "user_agent": s.user_agent,
                "two_factor": s.two_factor,
                "current": s.id == caller.session.id,
            })
        })
        .collect();
    Ok(Reply::ok(
        StatusCode::OK,
        "Sessions retrieved",
        Some(json!({"sessions": sessions})),
    ))
}

/// `DELETE /api/auth/sessions/{id}` — ends one of the caller's own sessions.
pub async fn delete_session(app: &App, request: &ApiRequest, id: &str) -> Result<Reply, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    let session_id = id
        .parse::<SessionId>()
        .map_err(|_| AccountError::SessionNotFound)?;
    app.accounts.end_session(&caller.user, &session_id).await?;
    Ok(Reply::ok(StatusCode::OK, "Session ended", None))
}
