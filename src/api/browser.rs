//! The browser's half of a session: the cookies the portal sets, and renewing an expired
//! access cookie from the refresh cookie.
//!
//! The refresh cookie is HttpOnly, `SameSite=Lax`, `Secure` over HTTPS, and lives as long
//! as the session may (names and scopes: `access::cookies`). Its path is `/` because the
//! gateway renews on any protected route
//! (the next request after the access cookie expired carries it); the gateway removes it,
//! like the access cookie, from every request it forwards, so no upstream ever sees it.
//! Renewal is the API's own refresh (rotation and reuse detection), called in-process.

use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::json;

pub use crate::access::credentials::cookie;
use crate::access::policy;
pub use crate::access::policy::Renewal;
use crate::api::ApiRequest;
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

/// Renews the browser's access token from its refresh cookie, through the API's refresh.
pub async fn renew(app: &App, headers: &HeaderMap, client_ip: IpAddr) -> Renewal {
    let Some(token) = refresh_token(app, headers) else {
        return Renewal::NoCookie;
    };
    let mut api_headers = HeaderMap::new();
    api_headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let request = ApiRequest {
        method: Method::POST,
        path: "/api/auth/refresh-token".into(),
        query: None,
        headers: api_headers,
        body: Bytes::from(json!({ "refresh_token": token }).to_string()),
        client_ip,
        user_agent: String::new(),
    };
    let response = crate::api::refresh(app, &request).await;
    if response.status == StatusCode::SERVICE_UNAVAILABLE {
        return Renewal::Unavailable(response);
    }
    if response.status != StatusCode::OK {
        return Renewal::Refused {
            cookies: clearing_cookies(app),
        };
    }
    match cookies_for_tokens(app, &response) {
        Some((access_token, cookies)) => Renewal::Renewed {
            access_token,
            cookies,
        },
        None => Renewal::Refused {
            cookies: clearing_cookies(app),
        },
    }
}

/// A browser's request, as the access policy sees it: where it signs in, and its renewal.
pub struct Browser<'a> {
    pub app: &'a App,
    pub headers: &'a HeaderMap,
    pub client_ip: IpAddr,
}

impl policy::Browser for Browser<'_> {
    fn login_url(&self) -> Option<String> {
        self.app.login_url()
    }

    fn account_page(&self) -> Option<String> {
        self.app.portal.account_page()
    }

    async fn renew(&self) -> Renewal {
        renew(self.app, self.headers, self.client_ip).await
    }
}
