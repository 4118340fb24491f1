//! The account API under `/api/auth/*`, answered by the gateway itself.
//!
//! Handlers are plain async functions over [`ApiRequest`] and [`App`]; they never see a
//! Pingora type, so they can be tested directly.

mod account;
pub mod browser;
mod cors;
mod input;
mod login;
pub mod openapi;
mod passkeys;
mod profile;
mod two_factor;
mod verify;

use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderMap, Method};

pub use crate::reply::{FieldError, Reply};
pub use input::Fields;
pub use login::session_cookie;
pub(crate) use passkeys::{new_passkey, passkey_name};
pub(crate) use two_factor::totp_enable;

use crate::accounts::Client;
use crate::app::App;

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
    app.portal.language_for(
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

/// The language of a mail to `user`: the one they registered in, else the request's.
pub(crate) fn mail_language<'a>(
    app: &'a App,
    request: &ApiRequest,
    user: &'a crate::store::User,
) -> &'a str {
    if user.language.is_empty() {
        request_language(app, request)
    } else {
        &user.language
    }
}

/// Whether `path` is forward-auth's (`/api/auth/verify`, with or without a trailing `/`),
/// which answers every method alike and is no CORS resource.
pub(crate) fn is_forward_auth(path: &str) -> bool {
    path.trim_end_matches('/') == "/api/auth/verify"
}

/// Applies the per-IP limits of DESIGN section 5: `global` for all of `/api/auth/*` (except
/// forward-auth, which answers for other servers' page loads), then the endpoint's own.
/// Returns the `RateLimit-*` headers of the tightest limit, or the 429 to send.
async fn rate_limit(
    app: &App,
    request: &ApiRequest,
) -> Result<Vec<(http::HeaderName, String)>, Reply> {
    let limits = &app.config.rate_limits;
    let path = request.path.trim_end_matches('/');
    if !path.starts_with("/api/auth/") || is_forward_auth(path) {
        return Ok(Vec::new());
    }
    let own = match (&request.method, path) {
        (&Method::POST, "/api/auth/register") => limits.register.map(|s| ("register", s)),
        // Options for a passwordless sign-in check nothing and are fetched by the sign-in
        // page on every load (autofill): only `global` limits them, so page views cannot
        // use up the password sign-ins of everyone behind one address.
        (&Method::POST, "/api/auth/login") | (&Method::POST, "/api/auth/passkeys/login") => {
            limits.login.map(|s| ("login", s))
        }
        (&Method::POST, "/api/auth/request-password-reset") => {
            limits.password_reset.map(|s| ("password_reset", s))
        }
        _ => None,
    };
    check_limits(app, request.client_ip, own).await
}

/// Checks `global` and then `own` for `client_ip`: the `RateLimit-*` headers of the
/// tightest, or the 429.
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

/// The per-IP limits of a sign-in, as `POST /api/auth/login` gets them (`global`, then
/// `login`): for the portal's sign-in forms, which call the account core directly. The
/// error is the 429 (with `Retry-After`).
pub async fn limit_sign_in(app: &App, client_ip: IpAddr) -> Result<(), Reply> {
    let limits = &app.config.rate_limits;
    let own = limits.login.map(|s| ("login", s));
    check_limits(app, client_ip, own).await.map(drop)
}

/// The per-IP `global` limit of the account API, for the portal's account forms that call
/// the account core directly. The error is the 429 (with `Retry-After`).
pub async fn limit_form(app: &App, client_ip: IpAddr) -> Result<(), Reply> {
    check_limits(app, client_ip, None).await.map(drop)
}

/// The endpoint table: one line per endpoint, 405 for a known path with the wrong method.
async fn route(app: &App, request: &ApiRequest) -> Reply {
    endpoint(app, request)
        .await
        .unwrap_or_else(|refusal| refusal)
}

/// The handler for the request's method and path; the error is the answer too (a refusal).
async fn endpoint(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let method = &request.method;
    let path = request.path.trim_end_matches('/');
    let is = |m: &Method| method == m;
    match path {
        "/.well-known/jwks.json" if is(&Method::GET) || is(&Method::HEAD) => Ok(jwks(app)),
        "/api/auth/register" if is(&Method::POST) => account::register(app, request).await,
        "/api/auth/verify-email" if is(&Method::POST) => account::verify_email(app, request).await,
        "/api/auth/resend-verification" if is(&Method::POST) => {
            account::resend_verification(app, request).await
        }
        "/api/auth/request-password-reset" if is(&Method::POST) => {
            account::request_password_reset(app, request).await
        }
        "/api/auth/reset-password" if is(&Method::POST) => {
            account::reset_password(app, request).await
        }
        "/api/auth/login" if is(&Method::POST) => login::login(app, request).await,
        "/api/auth/refresh-token" if is(&Method::POST) => login::refresh(app, request).await,
        "/api/auth/logout" if is(&Method::POST) => login::logout(app, request).await,
        "/api/auth/logout-all" if is(&Method::POST) => login::logout_all(app, request).await,
        "/api/auth/profile" if is(&Method::GET) => profile::get_profile(app, request).await,
        "/api/auth/profile" if is(&Method::PATCH) => profile::update_profile(app, request).await,
        "/api/auth/change-password" if is(&Method::POST) => {
            profile::change_password(app, request).await
        }
        "/api/auth/deactivate" if is(&Method::POST) => profile::deactivate(app, request).await,
        "/api/auth/sessions" if is(&Method::GET) => profile::list_sessions(app, request).await,
        "/api/auth/setup-2fa" if is(&Method::POST) => two_factor::setup(app, request).await,
        "/api/auth/enable-2fa" if is(&Method::POST) => two_factor::enable(app, request).await,
        "/api/auth/disable-2fa" if is(&Method::POST) => two_factor::disable(app, request).await,
        "/api/auth/passkeys" if is(&Method::GET) => passkeys::list(app, request).await,
        "/api/auth/passkeys/register/options" if is(&Method::POST) => {
            passkeys::register_options(app, request).await
        }
        "/api/auth/passkeys/register" if is(&Method::POST) => {
            passkeys::register(app, request).await
        }
        "/api/auth/passkeys/login/options" if is(&Method::POST) => {
            passkeys::login_options(app, request).await
        }
        "/api/auth/passkeys/login" if is(&Method::POST) => passkeys::login(app, request).await,
        // Every method is decided like GET: a proxy may ask with the client's own.
        "/api/auth/verify" => Ok(verify::forward_auth(app, request).await),
        "/api/auth/openapi.json" if is(&Method::GET) || is(&Method::HEAD) => {
            Ok(openapi::response())
        }
        _ => {
            if let Some(id) = passkey_id(path) {
                return match request.method {
                    Method::PATCH => passkeys::rename(app, request, id).await,
                    Method::DELETE => passkeys::remove(app, request, id).await,
                    _ => Err(Reply::method_not_allowed("PATCH, DELETE")),
                };
            }
            if let Some(id) = path.strip_prefix("/api/auth/sessions/") {
                if is(&Method::DELETE) && !id.contains('/') {
                    return profile::delete_session(app, request, id).await;
                }
                return Err(Reply::method_not_allowed("DELETE"));
            }
            Err(match allowed_methods(path) {
                Some(allow) => Reply::method_not_allowed(allow),
                None => Reply::not_found(),
            })
        }
    }
}

/// The `{id}` of `/api/auth/passkeys/{id}`.
fn passkey_id(path: &str) -> Option<&str> {
    path.strip_prefix("/api/auth/passkeys/")
        .filter(|id| !id.is_empty() && !id.contains('/') && !matches!(*id, "register" | "login"))
}

/// The methods a known path accepts, for 405 answers.
fn allowed_methods(path: &str) -> Option<&'static str> {
    Some(match path {
        "/.well-known/jwks.json" => "GET, HEAD",
        "/api/auth/profile" => "GET, PATCH",
        "/api/auth/sessions" => "GET",
        "/api/auth/passkeys" => "GET",
        "/api/auth/openapi.json" => "GET, HEAD",
        "/api/auth/register"
        | "/api/auth/verify-email"
        | "/api/auth/resend-verification"
        | "/api/auth/request-password-reset"
        | "/api/auth/reset-password"
        | "/api/auth/login"
        | "/api/auth/refresh-token"
        | "/api/auth/logout"
        | "/api/auth/logout-all"
        | "/api/auth/change-password"
        | "/api/auth/deactivate"
        | "/api/auth/setup-2fa"
        | "/api/auth/enable-2fa"
        | "/api/auth/disable-2fa"
        | "/api/auth/passkeys/register/options"
        | "/api/auth/passkeys/register"
        | "/api/auth/passkeys/login/options"
        | "/api/auth/passkeys/login" => "POST",
        _ if passkey_id(path).is_some() => "PATCH, DELETE",
        _ => return None,
    })
}

/// `GET /.well-known/jwks.json`
fn jwks(app: &App) -> Reply {
    Reply::encoded(http::StatusCode::OK, app.keys.jwks_document())
        .with_header(http::header::CACHE_CONTROL, "public, max-age=300")
}
