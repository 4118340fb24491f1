//! CORS for the account API: only the configured origins, never a reflected wildcard.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, ORIGIN, VARY,
};
use http::{Method, StatusCode};

use super::{ApiRequest, Reply};
use crate::config::CorsConfig;

const ALLOWED_METHODS: &str = "GET, POST, PATCH, DELETE, OPTIONS";
const ALLOWED_HEADERS: &str = "authorization, content-type";

/// The request's `Origin` when the config allows it.
fn allowed_origin<'a>(config: &CorsConfig, request: &'a ApiRequest) -> Option<&'a str> {
    let origin = request.headers.get(ORIGIN)?.to_str().ok()?;
    let allowed = config
        .allowed_origins
        .iter()
        .any(|o| (o == "*" && !config.allow_credentials) || o.trim_end_matches('/') == origin);
    allowed.then_some(origin)
}

/// Answers a CORS preflight (`OPTIONS` with an `Origin`), or `None` for other requests.
/// Forward-auth has none: it answers proxies, and its `OPTIONS` is decided like `GET`
/// (a 204 there would be an answer without credentials).
pub fn preflight(config: &CorsConfig, request: &ApiRequest) -> Option<Reply> {
    if request.method != Method::OPTIONS || super::is_forward_auth(&request.path) {
        return None;
    }
    let mut response = Reply::empty(StatusCode::NO_CONTENT)
        .with_header(VARY, "Origin")
        .with_header(http::header::ALLOW, allow_for(&request.path));
    if let Some(origin) = allowed_origin(config, request) {
        response = response
            .with_header(ACCESS_CONTROL_ALLOW_ORIGIN, origin)
            .with_header(ACCESS_CONTROL_ALLOW_METHODS, ALLOWED_METHODS)
            .with_header(ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS)
            .with_header(ACCESS_CONTROL_MAX_AGE, "600");
        if config.allow_credentials {
            response = response.with_header(ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
        }
    }
    Some(response)
}

/// The `Allow` of an `OPTIONS` answer: what the path itself accepts, not every method the
/// API uses anywhere (a client must not be told that `GET /api/auth/login` exists).
fn allow_for(path: &str) -> String {
    match super::endpoints::allowed_methods(path) {
        Some(methods) => format!("{methods}, OPTIONS"),
        None => "OPTIONS".to_string(),
    }
}

/// Adds the CORS headers an allowed origin needs to read `response`.
pub fn decorate(config: &CorsConfig, request: &ApiRequest, response: Reply) -> Reply {
    if request.method == Method::OPTIONS {
        return response;
    }
    let Some(origin) = allowed_origin(config, request) else {
        return response;
    };
    let mut response = response
        .with_header(ACCESS_CONTROL_ALLOW_ORIGIN, origin)
        .with_header(VARY, "Origin");
    if config.allow_credentials {
        response = response.with_header(ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue};

    fn request(method: Method, origin: &str) -> ApiRequest {
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN, HeaderValue::from_str(origin).unwrap());
        ApiRequest {
            method,
            path: "/api/auth/login".into(),
            query: None,
            headers,
            body: Bytes::new(),
            client_ip: "127.0.0.1".parse().unwrap(),
            user_agent: String::new(),
            original: None,
        }
    }

    fn header<'a>(r: &'a Reply, name: &http::HeaderName) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn allowed_origin_gets_headers_others_do_not() {
        let config = CorsConfig {
            allowed_origins: vec!["https://app.example.com".into()],
            allow_credentials: true,
        };
        let ok = decorate(
            &config,
            &request(Method::POST, "https://app.example.com"),
            Reply::not_found(),
        );
        assert_eq!(
            header(&ok, &ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("https://app.example.com")
        );
        assert_eq!(header(&ok, &ACCESS_CONTROL_ALLOW_CREDENTIALS), Some("true"));
        let other = decorate(
            &config,
            &request(Method::POST, "https://evil.example"),
            Reply::not_found(),
        );
        assert_eq!(header(&other, &ACCESS_CONTROL_ALLOW_ORIGIN), None);
    }

    #[test]
    fn preflight_lists_methods_for_allowed_origin_only() {
        let config = CorsConfig {
            allowed_origins: vec!["https://app.example.com".into()],
            allow_credentials: false,
        };
        let ok = preflight(
            &config,
            &request(Method::OPTIONS, "https://app.example.com"),
        )
        .unwrap();
        assert_eq!(ok.status, StatusCode::NO_CONTENT);
        assert!(header(&ok, &ACCESS_CONTROL_ALLOW_METHODS).is_some());
        let no = preflight(&config, &request(Method::OPTIONS, "https://evil.example")).unwrap();
        assert_eq!(header(&no, &ACCESS_CONTROL_ALLOW_ORIGIN), None);
        assert!(preflight(&config, &request(Method::GET, "https://app.example.com")).is_none());
        for path in ["/api/auth/verify", "/api/auth/verify/"] {
            let mut r = request(Method::OPTIONS, "https://app.example.com");
            r.path = path.into();
            assert!(
                preflight(&config, &r).is_none(),
                "{path} is decided like GET"
            );
        }
    }

    #[test]
    fn preflight_allow_lists_the_paths_own_methods() {
        let config = CorsConfig {
            allowed_origins: vec![],
            allow_credentials: false,
        };
        let allow = |path: &str| {
            let mut r = request(Method::OPTIONS, "https://app.example.com");
            r.path = path.into();
            let answer = preflight(&config, &r).unwrap();
            header(&answer, &http::header::ALLOW).unwrap().to_string()
        };
        assert_eq!(allow("/api/auth/login"), "POST, OPTIONS");
        assert_eq!(allow("/api/auth/profile/"), "GET, PATCH, OPTIONS");
        assert_eq!(allow("/api/auth/sessions/0123"), "DELETE, OPTIONS");
        assert_eq!(allow("/.well-known/jwks.json"), "GET, HEAD, OPTIONS");
        assert_eq!(allow("/api/auth/nothing"), "OPTIONS");
    }

    #[test]
    fn wildcard_never_combines_with_credentials() {
        let config = CorsConfig {
            allowed_origins: vec!["*".into()],
            allow_credentials: true,
        };
        let r = decorate(
            &config,
            &request(Method::GET, "https://any.example"),
            Reply::not_found(),
        );
        assert_eq!(header(&r, &ACCESS_CONTROL_ALLOW_ORIGIN), None);
    }
}
