//! `tls.redirect_listen`: the plain HTTP listener beside a TLS one. Every request is answered
//! `308 Permanent Redirect` to the same path and query over `https://` (RFC 9110 §15.4.9:
//! the method and body are kept), except `/.well-known/acme-challenge/…` (RFC 8555 §8.3),
//! which is reserved for HTTP-01 answers and is 404 until certificates are ordered here.
//!
//! The redirect's host is the request's only when the configuration names it (`public_url`'s
//! host, or a route's `host`, wildcards included); any other `Host` is sent to `public_url`'s
//! host, so the listener is never an open redirect. The port is `public_url`'s.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::config::{Config, HostPattern};
use crate::gateway::connections::Drain;
use crate::gateway::live::Current;
use crate::gateway::respond::{self, SECURITY_HEADERS};
use crate::reply::Reply;

/// Where HTTP-01 challenges are fetched (RFC 8555 §8.3).
pub const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Serves the redirect listener from the generation serving at each request.
pub struct RedirectApp {
    current: Current,
    drain: Arc<Drain>,
}

impl RedirectApp {
    /// Redirects by whichever configuration `current` holds; `drain` says when to close.
    pub fn new(current: Current, drain: Arc<Drain>) -> Self {
        Self { current, drain }
    }
}

/// The `https://` URL a plain request for `target` with `host` is sent to.
pub fn https_location(config: &Config, host: Option<&str>, target: &http::Uri) -> String {
    let public = &config.server.public_url;
    let host = host
        .map(|h| h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase())
        .filter(|h| is_configured_host(config, h))
        .unwrap_or_else(|| public.host().to_owned());
    let port = match public.port() {
        443 => String::new(),
        port => format!(":{port}"),
    };
    let path = target
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| p.starts_with('/'))
        .unwrap_or("/");
    format!("https://{host}{port}{path}")
}

/// Whether `host` (lower case, no port) is `public_url`'s or matched by a route's `host`
/// (a route for any host names none).
fn is_configured_host(config: &Config, host: &str) -> bool {
    host == config.server.public_url.host()
        || config.routes.iter().any(|route| {
            let pattern = HostPattern::of(&route.host);
            pattern != HostPattern::Any && pattern.matches(Some(host))
        })
}

/// The host a request names, without its port: its absolute-form target's, else `Host`'s.
fn request_host(session: &ServerSession) -> Option<String> {
    let header = session.req_header();
    let authority = match header.uri.authority() {
        Some(authority) => authority.clone(),
        None => header
            .headers
            .get(http::header::HOST)?
            .to_str()
            .ok()?
            .parse::<http::uri::Authority>()
            .ok()?,
    };
    Some(authority.host().to_owned())
}

#[async_trait]
impl ServeHttp for RedirectApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let header = session.req_header();
        let method = header.method.clone();
        let challenge = header.uri.path().starts_with(ACME_CHALLENGE_PREFIX);
        let (status, location, body) = if challenge {
            let reply = Reply::not_found();
            (reply.status, None, reply.body_bytes().to_vec())
        } else {
            let host = request_host(session);
            let gateway = self.current.load();
            let target = &session.req_header().uri;
            let location = https_location(&gateway.app.config, host.as_deref(), target);
            (StatusCode::PERMANENT_REDIRECT, Some(location), Vec::new())
        };
        session.set_keepalive(respond::keep_alive(self.drain.stopping()));
        let mut builder = Response::builder()
            .status(status)
            .header(http::header::CONTENT_LENGTH, body.len())
            .header(http::header::CACHE_CONTROL, "no-store");
        if !body.is_empty() {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
        }
        if let Some(location) = location {
            builder = builder.header(http::header::LOCATION, location);
        }
        for (name, value) in SECURITY_HEADERS {
            builder = builder.header(*name, *value);
        }
        let body = if method == http::Method::HEAD {
            Vec::new()
        } else {
            body
        };
        builder.body(body).unwrap_or_else(|_| {
            let mut fallback = Response::new(Vec::new());
            *fallback.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            fallback
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn only_configured_hosts_are_redirected_to() {
        let config = Config::load_from(
            Path::new("t.toml"),
            "[server]\npublic_url = \"https://gw.example.com:8443\"\n\
             [tls]\ncert_file = \"c\"\nkey_file = \"k\"\n\
             [[routes]]\nhost = \"app.example.com\"\nupstream = \"http://127.0.0.1:1\"\n\
             [[routes]]\nhost = \"*.apps.example.com\"\nupstream = \"http://127.0.0.1:1\"\n\
             [[routes]]\npath_prefix = \"/any\"\nupstream = \"http://127.0.0.1:1\"\n",
            Vec::new(),
        )
        .unwrap();
        let uri = |s: &str| s.parse::<http::Uri>().unwrap();
        let cases = [
            (
                Some("app.example.com"),
                "/a?b=c",
                "https://app.example.com:8443/a?b=c",
            ),
            (
                Some("APP.example.com."),
                "/",
                "https://app.example.com:8443/",
            ),
            (
                Some("x.apps.example.com"),
                "/p",
                "https://x.apps.example.com:8443/p",
            ),
            (Some("gw.example.com"), "/", "https://gw.example.com:8443/"),
            (Some("evil.example"), "/p", "https://gw.example.com:8443/p"),
            (
                Some("apps.example.com"),
                "/",
                "https://gw.example.com:8443/",
            ),
            (
                None,
                "//evil.example/x",
                "https://gw.example.com:8443//evil.example/x",
            ),
            (None, "*", "https://gw.example.com:8443/"),
        ];
        for (host, target, expected) in cases {
            assert_eq!(
                https_location(&config, host, &uri(target)),
                expected,
                "{host:?} {target}"
            );
        }
    }
}
