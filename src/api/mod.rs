//! The account API under `/api/auth/*`, answered by the gateway itself.
//!
//! Handlers are plain async functions over [`ApiRequest`] and [`App`]; they never see a
//! Pingora type, so they can be tested directly.

mod cors;
mod envelope;
mod input;

use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderMap, Method};

pub use envelope::{ApiResponse, FieldError};
pub use input::Fields;

use crate::app::App;

/// A request for the local API, already read and size-capped by the gateway.
#[derive(Clone, Debug)]
pub struct ApiRequest {
    pub method: Method,
    /// The path without the query string.
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The client address after `trusted_proxies` were applied.
    pub client_ip: IpAddr,
    /// The `User-Agent` header, truncated; empty when absent.
    pub user_agent: String,
}

/// Whether a path is answered by the local API rather than routed upstream.
pub fn is_local_path(path: &str) -> bool {
    path == "/api/auth" || path.starts_with("/api/auth/") || path == "/.well-known/jwks.json"
}

/// Answers one local API request.
pub async fn dispatch(app: &App, request: ApiRequest) -> ApiResponse {
    let cors = &app.config.cors;
    if let Some(preflight) = cors::preflight(cors, &request) {
        return preflight;
    }
    let response = route(app, &request).await;
    cors::decorate(cors, &request, response)
}

async fn route(_app: &App, request: &ApiRequest) -> ApiResponse {
    tracing::debug!(method = %request.method, path = %request.path, "no such endpoint");
    ApiResponse::not_found()
}
