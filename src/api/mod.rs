//! The account API under `/api/auth/*` and the admin API under `/api/admin/*`, answered by
//! the gateway itself.
//!
//! Handlers are plain async functions over [`ApiRequest`] and [`App`]; they never see a
//! Pingora type, so they can be tested directly.

mod account;
mod admin;
pub mod browser;
mod cors;
pub mod endpoints;
mod input;
mod login;
pub mod openapi;
mod passkeys;
mod profile;
mod two_factor;
mod verify;
pub use verify::Original;

use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderMap, Method};

pub use crate::reply::{FieldError, Reply};
pub use input::Fields;
pub use login::session_cookie;
pub(crate) use passkeys::new_passkey;
pub(crate) use two_factor::totp_enable;

use crate::accounts::Client;
use crate::accounts::admin::AccountAction;
use crate::app::App;
use endpoints::{AdminOperation, Limit, Operation, Resolved};

/// A request for the local API, already read and size-capped by the gateway.
#[derive(Clone, Debug)]
pub struct ApiRequest {
    /// The request method.
    pub method: Method,
    /// The path without the query string.
    pub path: String,
    /// The query string without the `?`; `None` when the target had none.
    pub query: Option<String>,
    /// The request headers as received.
    pub headers: HeaderMap,
    /// The whole body, at most `server.max_body_bytes` bytes; empty for GET and HEAD.
    pub body: Bytes,
    /// The client address after `trusted_proxies` were applied.
    pub client_ip: IpAddr,
    /// The `User-Agent` header, truncated; empty when absent.
    pub user_agent: String,
    /// Forward-auth from a trusted proxy: the original request it asks about, as the
    /// gateway found it in the route table; `None` otherwise.
    pub original: Option<Original>,
}

/// Answers one local API request.
pub async fn dispatch(app: &App, request: ApiRequest) -> Reply {
    let cors = &app.config.cors;
    if let Some(preflight) = cors::preflight(cors, &request) {
        return preflight;
    }
    let response = match rate_limit(app, &request).await {
        Err(refusal) => refusal,
        Ok(headers) => {
            let mut response = route(app, &request).await;
            response.headers.extend(headers);
            response
        }
    };
    cors::decorate(cors, &request, response)
}

/// The language of a request: its `Accept-Language` among the portal's languages (the
/// portal sends the language of its page), else `portal.default_language`.
pub(crate) fn request_language<'a>(app: &'a App, request: &ApiRequest) -> &'a str {
    app.languages.language_for(
        request
            .headers
            .get(http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    )
}

/// Where a request comes from, as the account core takes it.
pub(crate) fn client<'a>(app: &'a App, request: &'a ApiRequest) -> Client<'a> {
    Client {
        ip: request.client_ip,
        user_agent: &request.user_agent,
        language: request_language(app, request),
    }
}

/// Whether `path` is forward-auth's (`/api/auth/verify`, with or without a trailing `/`),
/// which answers every method alike and is no CORS resource.
pub(crate) fn is_forward_auth(path: &str) -> bool {
    matches!(
        endpoints::resolve(&Method::GET, path),
        Resolved::Found { endpoint, .. } if endpoint.operation == Operation::ForwardAuth
    )
}

/// Applies the per-IP limits of DESIGN section 5, as the endpoint table gives them: `global`
/// for all of `/api/auth/*` (except forward-auth, which answers for other servers' page
/// loads) and `/api/admin/*`, then the endpoint's own. Returns the `RateLimit-*` headers of the tightest limit,
/// or the 429 to send.
async fn rate_limit(
    app: &App,
    request: &ApiRequest,
) -> Result<Vec<(http::HeaderName, String)>, Reply> {
    let limit = endpoints::limit_of(&request.method, &request.path);
    limit_client(app, request.client_ip, limit).await
}

/// Applies the per-IP limits of `limit` to `client_ip`, as the endpoint table gives them to
/// its endpoints: also for the portal's forms, which call the account core directly and
/// count against the same limits as the endpoint they stand for. Returns the `RateLimit-*`
/// headers of the tightest limit; the error is the 429 (with `Retry-After`).
pub async fn limit_client(
    app: &App,
    client_ip: IpAddr,
    limit: Limit,
) -> Result<Vec<(http::HeaderName, String)>, Reply> {
    let limits = &app.config.rate_limits;
    let own = match limit {
        Limit::Unlimited => return Ok(Vec::new()),
        Limit::Global => None,
        Limit::Register => limits.register.map(|s| ("register", s)),
        Limit::Login => limits.login.map(|s| ("login", s)),
        Limit::PasswordReset => limits.password_reset.map(|s| ("password_reset", s)),
    };
    check_limits(app, client_ip, own).await
}

/// Checks `global` and then `own` (a scope and its spec) for `client_ip`.
async fn check_limits(
    app: &App,
    client_ip: IpAddr,
    own: Option<(&'static str, crate::domain::RateSpec)>,
) -> Result<Vec<(http::HeaderName, String)>, Reply> {
    let limits = &app.config.rate_limits;
    let key = crate::ratelimit::ip_key(client_ip);
    let mut tightest: Option<crate::ratelimit::Decision> = None;
    for (scope, spec) in limits.global.map(|s| ("global", s)).into_iter().chain(own) {
        let decision = app.rate_limiter.check(scope, &key, &spec).await;
        if !decision.allowed {
            return Err(crate::ratelimit::rejection(&decision));
        }
        if tightest
            .as_ref()
            .is_none_or(|t| decision.remaining < t.remaining)
        {
            tightest = Some(decision);
        }
    }
    Ok(tightest
        .map(|d| crate::ratelimit::headers(&d))
        .unwrap_or_default())
}

/// Answers a request from the endpoint table: its handler, else 405 naming the path's
/// methods, else 404.
async fn route(app: &App, request: &ApiRequest) -> Reply {
    match endpoints::resolve(&request.method, &request.path) {
        Resolved::Found { endpoint, id } => {
            call(app, request, endpoint.operation, id.unwrap_or(""))
                .await
                .unwrap_or_else(|refusal| refusal)
        }
        Resolved::WrongMethod { allow } => Reply::method_not_allowed(&allow),
        Resolved::Unknown => Reply::not_found(),
    }
}

/// Calls the handler of `operation`; `id` is the path's `{id}` segment (empty when none).
/// The error is the answer too (a refusal).
async fn call(
    app: &App,
    request: &ApiRequest,
    operation: Operation,
    id: &str,
) -> Result<Reply, Reply> {
    use Operation as Op;
    match operation {
        Op::Jwks => Ok(jwks(app)),
        Op::OpenApi => Ok(openapi::response()),
        Op::ForwardAuth => Ok(verify::forward_auth(app, request).await),
        Op::Register => account::register(app, request).await,
        Op::AcceptInvitation => account::accept_invitation(app, request).await,
        Op::VerifyEmail => account::verify_email(app, request).await,
        Op::ResendVerification => account::resend_verification(app, request).await,
        Op::RequestPasswordReset => account::request_password_reset(app, request).await,
        Op::ResetPassword => account::reset_password(app, request).await,
        Op::Login => login::login(app, request).await,
        Op::RefreshToken => login::refresh(app, request).await,
        Op::Reauthenticate => login::reauthenticate(app, request).await,
        Op::Logout => login::logout(app, request).await,
        Op::LogoutAll => login::logout_all(app, request).await,
        Op::GetProfile => profile::get_profile(app, request).await,
        Op::UpdateProfile => profile::update_profile(app, request).await,
        Op::ChangePassword => profile::change_password(app, request).await,
        Op::Deactivate => profile::deactivate(app, request).await,
        Op::ListSessions => profile::list_sessions(app, request).await,
        Op::DeleteSession => profile::delete_session(app, request, id).await,
        Op::SetupTwoFactor => two_factor::setup(app, request).await,
        Op::EnableTwoFactor => two_factor::enable(app, request).await,
        Op::DisableTwoFactor => two_factor::disable(app, request).await,
        Op::RegenerateRecoveryCodes => two_factor::regenerate_recovery_codes(app, request).await,
        Op::ListPasskeys => passkeys::list(app, request).await,
        Op::PasskeyRegisterOptions => passkeys::register_options(app, request).await,
        Op::PasskeyRegister => passkeys::register(app, request).await,
        Op::PasskeyLoginOptions => passkeys::login_options(app, request).await,
        Op::PasskeyLogin => passkeys::login(app, request).await,
        Op::RenamePasskey => passkeys::rename(app, request, id).await,
        Op::DeletePasskey => passkeys::remove(app, request, id).await,
        Op::Admin(admin_op) => call_admin(app, request, admin_op, id).await,
    }
}

/// Calls the admin API's handler of `operation` (see [`call`]).
async fn call_admin(
    app: &App,
    request: &ApiRequest,
    operation: AdminOperation,
    id: &str,
) -> Result<Reply, Reply> {
    use AccountAction as Act;
    use AdminOperation as Op;
    match operation {
        Op::StepUp => admin::step_up(app, request).await,
        Op::ListUsers => admin::list_users(app, request).await,
        Op::CreateUser => admin::create_user(app, request).await,
        Op::GetUser => admin::get_user(app, request, id).await,
        Op::DeleteUser => admin::delete_user(app, request, id).await,
        Op::ActivateUser => admin::act(app, request, id, Act::Activate).await,
        Op::DeactivateUser => admin::act(app, request, id, Act::Deactivate).await,
        Op::UnlockUser => admin::act(app, request, id, Act::Unlock).await,
        Op::ResetTwoFactor => admin::act(app, request, id, Act::ResetSecondFactors).await,
        Op::VerifyEmail => admin::act(app, request, id, Act::MarkVerified).await,
        Op::RevokeSessions => admin::act(app, request, id, Act::EndSessions).await,
        Op::GrantRole => admin::change_role(app, request, id, true).await,
        Op::RevokeRole => admin::change_role(app, request, id, false).await,
        Op::UnlinkIdentity => admin::unlink_identity(app, request, id).await,
        Op::UserSessions => admin::user_sessions(app, request, id).await,
        Op::EndSession => admin::end_session(app, request, id).await,
        Op::ListInvitations => admin::list_invitations(app, request).await,
        Op::Invite => admin::invite(app, request).await,
        Op::RevokeInvitations => admin::revoke_invitations(app, request).await,
        Op::Audit => admin::audit(app, request).await,
    }
}

/// `GET /.well-known/jwks.json`
fn jwks(app: &App) -> Reply {
    Reply::encoded(http::StatusCode::OK, app.keys.jwks_document())
        .with_header(http::header::CACHE_CONTROL, "public, max-age=300")
}
