//! The admin listener: `/metrics`, `/health` and `POST /reload` (from loopback only), never
//! exposed on the main port.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::app::App;
use crate::gateway::connections::Drain;
use crate::gateway::reload::Reloader;
use crate::gateway::respond::{self, SECURITY_HEADERS};
use crate::reply::Reply;

/// Serves the admin endpoints.
pub struct AdminApp {
    app: Arc<App>,
    drain: Arc<Drain>,
    reloader: Arc<Reloader>,
}

const JSON: &str = "application/json";

impl AdminApp {
    /// Wraps the shared application state; `drain` says when the server is stopping,
    /// `reloader` takes `POST /reload`.
    pub fn new(app: Arc<App>, drain: Arc<Drain>, reloader: Arc<Reloader>) -> Self {
        Self {
            app,
            drain,
            reloader,
        }
    }

    async fn answer(
        &self,
        method: &http::Method,
        path: &str,
        operator: bool,
    ) -> (StatusCode, &'static str, Vec<u8>) {
        let is_read = method == http::Method::GET || method == http::Method::HEAD;
        match path {
            "/reload" if method != http::Method::POST => {
                let r = Reply::method_not_allowed("POST");
                (r.status, JSON, r.body_bytes().to_vec())
            }
            "/reload" if !operator => {
                let r = Reply::error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "Reloads are taken from loopback addresses only, never from a browser.",
                );
                (r.status, JSON, r.body_bytes().to_vec())
            }
            "/reload" => self.reload().await,
            "/metrics" | "/health" if !is_read => {
                let r = Reply::method_not_allowed("GET, HEAD");
                (r.status, JSON, r.body_bytes().to_vec())
            }
            "/metrics" => (
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.app.metrics.render(),
            ),
            "/health" => {
                let (status, body) = self.app.health().await;
                (status, JSON, serde_json::to_vec(&body).unwrap_or_default())
            }
            _ => {
                let r = Reply::not_found();
                (r.status, JSON, r.body_bytes().to_vec())
            }
        }
    }

    /// `POST /reload`: 200 with the generation now serving and the settings that wait for a
    /// restart, or 422 with why the file was refused (the running configuration stays).
    async fn reload(&self) -> (StatusCode, &'static str, Vec<u8>) {
        let reloader = self.reloader.clone();
        // Files and DNS: the blocking pool, not this listener's thread.
        let result = tokio::task::spawn_blocking(move || reloader.reload()).await;
        let (status, body) = match result {
            Ok(Ok(reloaded)) => (
                StatusCode::OK,
                serde_json::json!({
                    "status": "reloaded",
                    "source": reloaded.source,
                    "generation": reloaded.generation,
                    "restart_needed": reloaded.restart_needed,
                }),
            ),
            Ok(Err(e)) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!({"status": "refused", "error": e.to_string()}),
            ),
            Err(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"status": "refused", "error": "the reload did not finish"}),
            ),
        };
        (status, JSON, serde_json::to_vec(&body).unwrap_or_default())
    }
}

/// Whether a request may change the running gateway (`POST /reload`): it comes from a
/// loopback address, names a loopback host (`localhost` or an address: no DNS rebinding of
/// a name onto 127.0.0.1), and is not a browser's (no `Origin`, no `Sec-Fetch-*`), so no web
/// page open on the operator's machine can send it.
fn is_operator(session: &ServerSession) -> bool {
    let loopback_peer = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .is_some_and(|a| a.ip().to_canonical().is_loopback());
    let headers = &session.req_header().headers;
    let from_browser = headers.contains_key(http::header::ORIGIN)
        || headers
            .keys()
            .any(|name| name.as_str().starts_with("sec-fetch-"));
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok());
    let loopback_host = host.is_some_and(|h| {
        let name = h.host().trim_start_matches('[').trim_end_matches(']');
        name.eq_ignore_ascii_case("localhost")
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.to_canonical().is_loopback())
    });
    loopback_peer && loopback_host && !from_browser
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let operator = is_operator(session);
        let (status, content_type, body) = self.answer(&method, &path, operator).await;
        // Decided once the answer is ready: a stop that began meanwhile closes too.
        session.set_keepalive(respond::keep_alive(self.drain.stopping()));
        let mut builder = Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len())
            .header(http::header::CACHE_CONTROL, "no-store");
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
