//! The logged-in user's own account: profile, password, deactivation, sessions.

use http::StatusCode;
use serde_json::{Value, json};

use super::account::user_profile;
use super::{ApiRequest, Fields, Reply};
use crate::accounts::{AccountError, PasswordChange, ProfileChange, StepUp};
use crate::app::App;
use crate::session::SessionId;
use crate::store::User;

/// The account as the profile shows it, with `recovery_codes_remaining` (the unused
/// recovery codes; 0 without 2FA).
async fn profile_of(app: &App, user: &User) -> Result<Value, Reply> {
    let mut profile = user_profile(user);
    let remaining = app.accounts.recovery_codes_remaining(user).await?;
    profile["recovery_codes_remaining"] = json!(remaining);
    Ok(profile)
}

/// `GET /api/auth/profile`
pub async fn get_profile(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    let profile = profile_of(app, &caller.user).await?;
    Ok(Reply::ok(
        StatusCode::OK,
        "The profile was retrieved.",
        Some(json!({"user": profile})),
    ))
}

/// `PATCH /api/auth/profile`
pub async fn update_profile(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    let mut f = Fields::from_request(request)?;
    let (first_name, last_name) = (f.optional_text("first_name"), f.optional_text("last_name"));
    let change = ProfileChange {
        first_name: first_name.as_deref(),
        last_name: last_name.as_deref(),
    };
    let names = change.parse_after(f.found())?;
    let user = app.accounts.update_profile(&caller.user, names).await?;
    let profile = profile_of(app, &user).await?;
    Ok(Reply::ok(
        StatusCode::OK,
        "The profile was updated.",
        Some(json!({"user": profile})),
    ))
}

/// `POST /api/auth/change-password` — ends the user's other sessions.
pub async fn change_password(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    let mut f = Fields::from_request(request)?;
    let form = PasswordChange {
        current_password: &f.text("current_password"),
        new_password: &f.text("new_password"),
    };
    let (current, new) = form.parse_after(f.found())?;
    let proof = StepUp {
        password: &current,
        password_field: "current_password",
        code: None,
    };
    let client = super::client(app, request);
    let (user, keep) = (&caller.user, &caller.session.id);
    app.accounts
        .change_password(user, keep, proof, new, &client)
        .await?;
    Ok(Reply::ok(
        StatusCode::OK,
        "The password was changed, and the other sessions have been ended.",
        None,
    ))
}

/// `POST /api/auth/deactivate` — the account goes inactive and every session ends.
pub async fn deactivate(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    let mut f = Fields::from_request(request)?;
    let password = f.required_raw("password");
    let password = f.finish_with(password)?;
    let proof = StepUp {
        password: &password,
        password_field: "password",
        code: None,
    };
    let client = super::client(app, request);
    app.accounts
        .deactivate(&caller.user, proof, &client)
        .await?;
    Ok(Reply::ok(
        StatusCode::OK,
        "The account was deactivated.",
        None,
    ))
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
        "The sessions were retrieved.",
        Some(json!({"sessions": sessions})),
    ))
}

/// `DELETE /api/auth/sessions/{id}` — ends one of the caller's own sessions.
pub async fn delete_session(app: &App, request: &ApiRequest, id: &str) -> Result<Reply, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    let session_id = id
        .parse::<SessionId>()
        .map_err(|_| AccountError::SessionNotFound)?;
    let client = super::client(app, request);
    app.accounts
        .end_session(&caller.user, &session_id, &client)
        .await?;
    Ok(Reply::ok(StatusCode::OK, "The session was ended.", None))
}
