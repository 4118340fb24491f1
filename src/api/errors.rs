//! Mapping backend failures to the envelope, once.

use http::StatusCode;

use super::ApiResponse;
use crate::auth::password::PasswordError;
use crate::session::SessionError;
use crate::store::StoreError;

/// 503: a dependency is down. Never a 500 for that.
pub fn unavailable(what: &str) -> ApiResponse {
    ApiResponse::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
        &format!("The {what} is temporarily unavailable; try again shortly"),
    )
    .with_header(http::header::RETRY_AFTER, "5")
}

/// 500: a bug. Logged with the cause; the client learns nothing more.
pub fn internal(context: &str, error: &dyn std::fmt::Display) -> ApiResponse {
    tracing::error!(%error, context, "internal error");
    ApiResponse::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "Internal error",
    )
}

impl From<StoreError> for ApiResponse {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "user store unavailable");
                unavailable("user store")
            }
            StoreError::DuplicateEmail => ApiResponse::error(
                StatusCode::CONFLICT,
                "email_taken",
                "An account with this email already exists",
            ),
            StoreError::NotFound => ApiResponse::error(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "The account no longer exists",
            ),
            other => internal("user store", &other),
        }
    }
}

impl From<SessionError> for ApiResponse {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Unavailable(cause) => {
                tracing::warn!(%cause, "session store unavailable");
                unavailable("session store")
            }
            other => internal("session store", &other),
        }
    }
}

impl From<PasswordError> for ApiResponse {
    fn from(e: PasswordError) -> Self {
        internal("password hashing", &e)
    }
}
