//! Login, refresh and logout over JSON: the account core's sign-in and sessions
//! (`crate::accounts`), parsed from the body and answered on the envelope.

use http::StatusCode;
use serde_json::{Map, Value, json};
use webauthn_rs::prelude::PublicKeyCredential;

use super::account::user_summary;
use super::input::body_object;
use super::{ApiRequest, Fields, Reply};
use crate::accounts::{
    PasskeyAnswer, Reauthenticated, Reproof, SecondFactor, SignIn, SignedIn, Tokens,
};
use crate::app::App;
use crate::passkeys::CeremonyId;

/// The `Set-Cookie` value carrying an access token to browsers (or clearing it with `""`).
///
/// HttpOnly so scripts cannot read it, SameSite=Lax against cross-site requests, `Secure`
/// and `__Host-` prefixed when the gateway is served over HTTPS, and
/// `sessions.cookie_domain` as its `Domain` when set (then `__Secure-`): `access::cookies`.
pub fn session_cookie(app: &App, access_token: &str) -> String {
    let max_age = if access_token.is_empty() {
        0
    } else {
        app.config.tokens.access_ttl.get().as_secs()
    };
    let rules = app.access.cookies();
    rules.set_cookie(rules.access, access_token, Some(max_age), true)
}

/// `data.tokens` of a login or refresh answer.
fn tokens_json(tokens: &Tokens) -> Value {
    json!({
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "token_type": "Bearer",
        "expires_in": tokens.expires_in,
        "refresh_expires_in": tokens.refresh_expires_in,
    })
}

/// The success answer carrying tokens, with the browser cookie set.
fn with_tokens(app: &App, message: &str, mut data: Value, tokens: &Tokens) -> Reply {
    let cookie = session_cookie(app, &tokens.access_token);
    data["tokens"] = tokens_json(tokens);
    Reply::ok(StatusCode::OK, message, Some(data)).with_header(http::header::SET_COOKIE, cookie)
}

/// The answer to a sign-in (password or passkey): the user, with roles, and the tokens.
pub(super) fn signed_in(app: &App, signed: SignedIn) -> Reply {
    let mut summary = user_summary(&signed.user);
    summary["roles"] = json!(signed.user.roles);
    let data = json!({"user": summary});
    with_tokens(app, "You are signed in.", data, &signed.tokens)
}

/// The second factor sent with a login: a `passkey` answer `{ceremony_id, credential}`
/// (one that cannot be read counts as a wrong factor), else `two_factor_code`.
pub(super) fn second_factor(request: &ApiRequest, code: Option<String>) -> SecondFactor {
    let body = body_object(request);
    let Some(answer) = body.get("passkey").filter(|v| !v.is_null()) else {
        return SecondFactor::Code(code);
    };
    let empty = Map::new();
    let answer = answer.as_object().unwrap_or(&empty);
    let ceremony = answer
        .get("ceremony_id")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<CeremonyId>().ok());
    let credential = answer
        .get("credential")
        .and_then(|c| serde_json::from_value::<PublicKeyCredential>(c.clone()).ok());
    SecondFactor::Passkey(ceremony.zip(credential).map(|(ceremony, credential)| {
        Box::new(PasskeyAnswer {
            ceremony,
            credential,
        })
    }))
}

/// `POST /api/auth/login`
pub async fn login(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let mut f = Fields::from_request(request)?;
    let email = f.required("email");
    let password = f.required_raw("password");
    let remember_me = f.flag("remember_me");
    let two_factor_code = f.optional("two_factor_code");
    let (email, password) = f.finish_with(email.zip(password))?;
    let input = SignIn {
        email: &email,
        password: &password,
        remember_me,
        second: second_factor(request, two_factor_code),
        hold_pending: false,
    };
    let signed = app
        .accounts
        .sign_in(input, &super::client(app, request))
        .await?;
    Ok(signed_in(app, signed))
}

/// `POST /api/auth/refresh-token`
pub async fn refresh(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let mut f = Fields::from_request(request)?;
    let token = f.required("refresh_token");
    let token = f.finish_with(token)?;
    let renewed = app
        .accounts
        .refresh(&token, &super::client(app, request))
        .await?;
    Ok(with_tokens(
        app,
        "The tokens were refreshed.",
        json!({}),
        &renewed.tokens,
    ))
}

/// `POST /api/auth/reauthenticate` `{password, two_factor_code?}` or `{passkey}` — the caller's
/// session proves who they are again (one guess against the lockout; the sign-in's per-IP
/// limits through the endpoint table): a new access token with `auth_time` now, in the same
/// session (the refresh token is unchanged).
pub async fn reauthenticate(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    let mut f = Fields::from_request(request)?;
    let password = f.optional_raw("password").unwrap_or_default();
    let code = f.optional("two_factor_code");
    f.finish()?;
    let proof = match second_factor(request, None) {
        SecondFactor::Passkey(answer) => Reproof::Passkey(answer),
        SecondFactor::Code(_) => Reproof::Password {
            password: &password,
            code: code.as_deref(),
        },
    };
    let client = super::client(app, request);
    let proven = app
        .accounts
        .reauthenticate(&caller.user, caller.session.id, proof, &client)
        .await?;
    Ok(reauthenticated(app, &proven))
}

/// The answer to a reauthentication: the new access token (as `data.tokens`, without a
/// refresh token: the session's stays) and its `auth_time`, with the browser cookie set.
fn reauthenticated(app: &App, proven: &Reauthenticated) -> Reply {
    let data = json!({
        "tokens": {
            "access_token": proven.access_token,
            "token_type": "Bearer",
            "expires_in": proven.expires_in,
        },
        "auth_time": proven.principal.auth_time(),
    });
    let cookie = session_cookie(app, &proven.access_token);
    Reply::ok(
        StatusCode::OK,
        "Your identity was proven again.",
        Some(data),
    )
    .with_header(http::header::SET_COOKIE, cookie)
}

/// `POST /api/auth/logout` — ends this session at once.
pub async fn logout(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    app.accounts
        .logout(
            &caller.user,
            &caller.session.id,
            &super::client(app, request),
        )
        .await?;
    Ok(Reply::ok(StatusCode::OK, "You are signed out.", None)
        .with_header(http::header::SET_COOKIE, session_cookie(app, "")))
}

/// `POST /api/auth/logout-all` — ends every session of the user.
pub async fn logout_all(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    let client = super::client(app, request);
    let ended = app.accounts.logout_all(&caller.user, &client).await?;
    Ok(Reply::ok(
        StatusCode::OK,
        "You are signed out on every device.",
        Some(json!({"sessions_ended": ended})),
    ))
}
