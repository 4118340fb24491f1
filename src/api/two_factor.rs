//! The second factor at login.

use crate::app::App;
use crate::store::User;

/// Why a login's second factor did not pass.
pub enum LoginCodeError {
    /// 2FA is on and no code was sent: not a failed attempt.
    Required,
    /// A code was sent and is wrong, used or stale: counts as a failed attempt.
    Wrong,
}

/// Checks the login's second factor; `Ok(true)` when one was passed, `Ok(false)` when the
/// account has none.
pub async fn check_login_code(
    _app: &App,
    user: &User,
    code: Option<&str>,
) -> Result<bool, LoginCodeError> {
    if !user.two_factor_enabled {
        return Ok(false);
    }
    match code {
        None | Some("") => Err(LoginCodeError::Required),
        Some(_) => Err(LoginCodeError::Wrong),
    }
}
