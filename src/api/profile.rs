//! The logged-in user's own account: profile, password, deactivation, sessions.

use http::StatusCode;
use serde_json::json;

use super::account::{check_name, parse_new_password, user_profile};
use super::caller::authenticate;
use super::{ApiRequest, ApiResponse, Fields};
use crate::app::App;
use crate::mail::MailKind;
use crate::session::SessionId;
use crate::telemetry::SECURITY;

/// `GET /api/auth/profile`
pub async fn get_profile(app: &App, request: &ApiRequest) -> ApiResponse {
    match authenticate(app, request).await {
        Ok(caller) => ApiResponse::ok(
            StatusCode::OK,
            "Profile retrieved",
            Some(json!({"user": user_profile(&caller.user)})),
        ),
        Err(e) => e,
    }
}

/// `PATCH /api/auth/profile`
pub async fn update_profile(app: &App, request: &ApiRequest) -> ApiResponse {
    let caller = match authenticate(app, request).await {
        Ok(c) => c,
        Err(e) => return e,
    };
    let mut f = match Fields::from_request(request) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let first_name = f.optional("first_name");
    let last_name = f.optional("last_name");
    for (field, value) in [("first_name", &first_name), ("last_name", &last_name)] {
        match value {
            Some(v) if v.is_empty() => f.reject(field, "must not be empty"),
            Some(v) => check_name(&mut f, field, v),
            None => {}
        }
    }
    if let Err(e) = f.finish() {
        return e;
    }
    match app
        .store
        .update_profile(caller.user.id, first_name, last_name)
        .await
    {
        Ok(Some(user)) => ApiResponse::ok(
            StatusCode::OK,
            "Profile updated",
            Some(json!({"user": user_profile(&user)})),
        ),
        Ok(None) => ApiResponse::not_found(),
        Err(e) => e.into(),
    }
}

/// Verifies the caller's current password, counting nothing (the caller is logged in).
async fn check_password(
    app: &App,
    password: &str,
    hash: &str,
    field: &str,
) -> Result<(), ApiResponse> {
    match app.hasher.verify(password, hash).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(ApiResponse::validation(&[super::FieldError::new(
            field,
            "is incorrect",
        )])),
        Err(e) => Err(e.into()),
    }
}

/// Reads `{password}` from the body and checks it against the user's: 400 when missing or wrong.
pub(super) async fn confirm_password(
    app: &App,
    request: &ApiRequest,
    user: &crate::store::User,
) -> Result<(), ApiResponse> {
    let mut f = Fields::from_request(request)?;
    let password = f.required_raw("password");
    f.finish()?;
    let Some(password) = password else {
        return Err(ApiResponse::validation(&[]));
    };
    check_password(app, &password, &user.password_hash, "password").await
}

/// `POST /api/auth/change-password` — ends the user's other sessions.
pub async fn change_password(app: &App, request: &ApiRequest) -> ApiResponse {
    let caller = match authenticate(app, request).await {
        Ok(c) => c,
        Err(e) => return e,
    };
    let mut f = match Fields::from_request(request) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let current = f.required_raw("current_password");
    let new = f.required_raw("new_password");
    let new = parse_new_password(&mut f, "new_password", new);
    if let Err(e) = f.finish() {
        return e;
    }
    let (Some(current), Some(new)) = (current, new) else {
        return ApiResponse::validation(&[]);
    };
    if let Err(e) = check_password(
        app,
        &current,
        &caller.user.password_hash,
        "current_password",
    )
    .await
    {
        return e;
    }
    let hash = match app.hasher.hash(new.expose()).await {
        Ok(h) => h,
        Err(e) => return e.into(),
    };
    if let Err(e) = app.store.set_password_hash(caller.user.id, &hash).await {
        return e.into();
    }
    let ended = match app
        .sessions
        .revoke_all(caller.session.user_id, Some(&caller.session.id))
        .await
    {
        Ok(ended) => ended.len(),
        Err(e) => return e.into(),
    };
    app.gatekeeper.forget_user(caller.session.user_id);
    tracing::info!(target: SECURITY, event = "password_changed", user_id = %caller.user.id, sessions_ended = ended);
    app.mailer.send_in_background_in(
        super::mail_language(app, request, &caller.user),
        caller.user.email.as_str(),
        &caller.user.first_name,
        MailKind::PasswordChanged,
    );
    ApiResponse::ok(
        StatusCode::OK,
        "Password changed; other sessions have been ended",
        None,
    )
}

/// `POST /api/auth/deactivate` — the account goes inactive and every session ends.
pub async fn deactivate(app: &App, request: &ApiRequest) -> ApiResponse {
    let caller = match authenticate(app, request).await {
        Ok(c) => c,
        Err(e) => return e,
    };
    if let Err(e) = confirm_password(app, request, &caller.user).await {
        return e;
    }
    if let Err(e) = app.store.set_active(caller.user.id, false).await {
        return e.into();
    }
    let ended = match app.sessions.revoke_all(caller.session.user_id, None).await {
        Ok(ended) => ended.len(),
        Err(e) => return e.into(),
    };
    app.gatekeeper.forget_user(caller.session.user_id);
    tracing::info!(target: SECURITY, event = "account_deactivated", user_id = %caller.user.id, sessions_ended = ended);
    ApiResponse::ok(StatusCode::OK, "Account deactivated", None)
}

/// `GET /api/auth/sessions` — the caller's live sessions.
pub async fn list_sessions(app: &App, request: &ApiRequest) -> ApiResponse {
    let caller = match authenticate(app, request).await {
        Ok(c) => c,
        Err(e) => return e,
    };
    let sessions = match app.sessions.list(caller.session.user_id).await {
        Ok(s) => s,
        Err(e) => return e.into(),
    };
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
    ApiResponse::ok(
        StatusCode::OK,
        "Sessions retrieved",
        Some(json!({"sessions": sessions})),
    )
}

/// `DELETE /api/auth/sessions/{id}` — ends one of the caller's own sessions.
pub async fn delete_session(app: &App, request: &ApiRequest, id: &str) -> ApiResponse {
    let caller = match authenticate(app, request).await {
        Ok(c) => c,
        Err(e) => return e,
    };
    let not_found = || {
        ApiResponse::error(
            StatusCode::NOT_FOUND,
            "session_not_found",
            "No such session",
        )
    };
    let Ok(session_id) = id.parse::<SessionId>() else {
        return not_found();
    };
    match app.sessions.get(&session_id).await {
        Ok(Some(s)) if s.user_id == caller.session.user_id => {}
        Ok(_) => return not_found(),
        Err(e) => return e.into(),
    }
    if let Err(e) = app.sessions.revoke(&session_id).await {
        return e.into();
    }
    app.gatekeeper.forget_session(&session_id);
    tracing::info!(target: SECURITY, event = "session_revoked", user_id = %caller.user.id, session_id = %session_id);
    ApiResponse::ok(StatusCode::OK, "Session ended", None)
}
