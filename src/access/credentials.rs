//! Who is calling: a verified access token whose session is still live.

use chrono::Utc;
use http::StatusCode;

use crate::api::{ApiRequest, ApiResponse};
use crate::app::App;
use crate::auth::jwt::AccessClaims;
use crate::domain::UserId;
use crate::session::{Session, SessionId};
use crate::store::User;

/// Activity closer together than this does not slide the session again.
const TOUCH_INTERVAL_SECS: i64 = 60;

/// An authenticated caller of the account API.
pub struct Caller {
    pub user: User,
    pub session: Session,
    pub claims: AccessClaims,
}

/// 401 with `WWW-Authenticate`, so clients know to log in (again).
pub fn unauthorized(code: &str, message: &str) -> ApiResponse {
    ApiResponse::error(StatusCode::UNAUTHORIZED, code, message).with_header(
        http::header::WWW_AUTHENTICATE,
        format!("Bearer error=\"invalid_token\", error_description=\"{message}\""),
    )
}

/// The bearer token of a request, if it carries one.
pub fn bearer_token(request: &ApiRequest) -> Option<&str> {
    let value = request
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Requires a valid access token whose session is live and whose account is active.
pub async fn authenticate(app: &App, request: &ApiRequest) -> Result<Caller, ApiResponse> {
    let Some(token) = bearer_token(request) else {
        return Err(ApiResponse::error(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "Authentication required",
        )
        .with_header(http::header::WWW_AUTHENTICATE, "Bearer"));
    };
    let claims = app.keys.verify_access(token).map_err(|e| {
        tracing::debug!(reason = e.reason(), "access token refused");
        unauthorized("invalid_token", "Invalid or expired token")
    })?;
    let session_ended = || unauthorized("session_ended", "Session has ended; log in again");
    let session_id: SessionId = claims.sid.parse().map_err(|_| session_ended())?;
    let session = app
        .sessions
        .get(&session_id)
        .await?
        .ok_or_else(session_ended)?;
    if session.user_id.to_string() != claims.sub {
        return Err(session_ended());
    }
    let user = app
        .store
        .find_by_id(UserId::from(session.user_id))
        .await?
        .ok_or_else(session_ended)?;
    if !user.is_active {
        return Err(ApiResponse::error(
            StatusCode::FORBIDDEN,
            "account_deactivated",
            "This account has been deactivated",
        ));
    }
    let now = Utc::now();
    if (now - session.last_seen_at).num_seconds() >= TOUCH_INTERVAL_SECS {
        app.sessions.touch(&session.id, now).await?;
    }
    Ok(Caller {
        user,
        session,
        claims,
    })
}
