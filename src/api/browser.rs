//! The browser's half of a session: the cookies the portal sets, and renewing an expired
//! access cookie from the refresh cookie.
//!
//! The refresh cookie is HttpOnly, `SameSite=Lax`, `Secure` over HTTPS, and lives as long
//! as the session may (names and scopes: `access::cookies`). Its path is `/` because the
//! gateway renews on any protected route
//! (the next request after the access cookie expired carries it); the gateway removes it,
//! like the access cookie, from every request it forwards, so no upstream ever sees it.
//! Renewal is the account core's refresh (rotation and reuse detection).

use std::net::IpAddr;

use http::HeaderMap;

pub use crate::access::credentials::cookie;
use crate::access::policy;
pub use crate::access::policy::Renewal;
use crate::accounts::{Client, Tokens};
use crate::app::App;
use crate::reply::Reply;

/// The name of the CSRF cookie on this gateway.
pub fn csrf_cookie_name(app: &App) -> &'static str {
    app.access.cookies().csrf
}

/// The `Set-Cookie` value of the refresh cookie (`""` with `max_age` 0 clears it).
pub fn refresh_cookie(app: &App, token: &str, max_age: u64) -> String {
    let rules = app.access.cookies();
    rules.set_cookie(rules.refresh, token, Some(max_age), true)
}

/// The `Set-Cookie` value of the CSRF cookie: lives as long as the browser does, on the
/// portal's own host only.
pub fn csrf_cookie(app: &App, value: &str) -> String {
    let rules = app.access.cookies();
    rules.set_cookie(rules.csrf, value, None, false)
}

/// The `Set-Cookie` values that end the browser's sign-in: access and refresh cookies.
pub fn clearing_cookies(app: &App) -> Vec<String> {
    vec![
        crate::api::session_cookie(app, ""),
        refresh_cookie(app, "", 0),
    ]
}

/// The refresh token the browser holds, if any.
pub fn refresh_token(app: &App, headers: &HeaderMap) -> Option<String> {
    cookie(headers, app.access.cookies().refresh).map(str::to_owned)
}

/// The cookies for a fresh pair of tokens from a login or refresh answer (`data.tokens`),
/// with the access cookie the API already set.
pub fn cookies_for_tokens(app: &App, response: &Reply) -> Option<(String, Vec<String>)> {
    let tokens = &response.body_json()["data"]["tokens"];
    let access = tokens["access_token"].as_str()?.to_owned();
    let refresh = tokens["refresh_token"].as_str()?;
    let max_age = tokens["refresh_expires_in"].as_u64().unwrap_or(0);
    let mut cookies: Vec<String> = response
        .headers
        .iter()
        .filter(|(name, _)| name == http::header::SET_COOKIE)
        .map(|(_, value)| value.clone())
        .collect();
    cookies.push(refresh_cookie(app, refresh, max_age));
    Some((access, cookies))
}

/// The cookies for a fresh pair of tokens: the access cookie and the refresh cookie.
pub fn cookies_of(app: &App, tokens: &Tokens) -> Vec<String> {
    vec![
        crate::api::session_cookie(app, &tokens.access_token),
        refresh_cookie(app, &tokens.refresh_token, tokens.refresh_expires_in),
    ]
}

/// Renews the browser's access token from its refresh cookie, through the account core's
/// refresh: the principal of the token it minted, and the cookies that carry the pair.
pub async fn renew(app: &App, headers: &HeaderMap, client_ip: IpAddr) -> Renewal {
    let Some(token) = refresh_token(app, headers) else {
        return Renewal::NoCookie;
    };
    let client = Client {
        ip: client_ip,
        user_agent: "",
        language: "",
    };
    match app.accounts.refresh(&token, &client).await {
        Ok(renewed) => Renewal::Renewed {
            cookies: cookies_of(app, &renewed.tokens),
            principal: renewed.principal,
            access_token: renewed.tokens.access_token,
        },
        Err(e) if e.is_unavailable() => Renewal::Unavailable(e.into()),
        Err(_) => Renewal::Refused {
            cookies: clearing_cookies(app),
        },
    }
}

/// A browser's request, as the access policy sees it: its renewal.
pub struct Browser<'a> {
    /// The gateway instance: its core renews.
    pub app: &'a App,
    /// The request headers, where the refresh cookie is read from.
    pub headers: &'a HeaderMap,
    /// The client address after `trusted_proxies` were applied.
    pub client_ip: IpAddr,
}

impl policy::Browser for Browser<'_> {
    async fn renew(&self) -> Renewal {
        renew(self.app, self.headers, self.client_ip).await
    }
}
