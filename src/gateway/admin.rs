//! The admin listener: `/metrics` and `/health`, never exposed on the main port.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::app::App;
use crate::gateway::connections::Drain;
use crate::gateway::respond::{self, SECURITY_HEADERS};
use crate::reply::Reply;

/// Serves the admin endpoints.
pub struct AdminApp {
    app: Arc<App>,
    drain: Arc<Drain>,
}

impl AdminApp {
    /// Wraps the shared application state; `drain` says when the server is stopping.
    pub fn new(app: Arc<App>, drain: Arc<Drain>) -> Self {
        Self { app, drain }
    }

    async fn answer(
        &self,
        method: &http::Method,
        path: &str,
    ) -> (StatusCode, &'static str, Vec<u8>) {
        const JSON: &str = "application/json";
        let is_read = method == http::Method::GET || method == http::Method::HEAD;
        match path {
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
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let (status, content_type, body) = self.answer(&method, &path).await;
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
