//! The Pingora side: one `ProxyHttp` impl whose hooks each do one thing and delegate to
//! plain functions. Pingora types stay in this module.
//!
//! The hot path for a proxied request is: `request_filter` (route match) →
//! `upstream_peer` → `upstream_request_filter` (strip spoofed identity, set forwarding
//! headers) → upstream → `logging` (metrics).

pub mod admin;
pub mod client_ip;
pub mod identity;
pub mod policy;
mod respond;
pub mod routes;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{ErrorSource, ErrorType};

use crate::api::{self, ApiRequest, ApiResponse};
use crate::app::App;
use crate::auth::gatekeeper::Principal;
use crate::metrics::status_label;
use crate::telemetry::SECURITY;
use policy::Verdict;
use routes::Route;

pub use respond::write_local_response;

/// Route label for requests the gateway answers itself.
const LOCAL_ROUTE: &str = "local";
/// Route label for requests no route matched.
const UNMATCHED_ROUTE: &str = "unmatched";

/// The proxy service.
pub struct Gateway {
    app: Arc<App>,
}

impl Gateway {
    /// Wraps the shared application state.
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

/// Per-request state shared across the hooks.
pub struct RequestCtx {
    started: Instant,
    route: Option<Arc<Route>>,
    client_ip: IpAddr,
    upstream_started: Option<Instant>,
    /// Who the request comes from, on routes that require it.
    principal: Option<Principal>,
    /// Decrements the in-flight gauge however the request ends.
    _in_flight: InFlight,
}

impl RequestCtx {
    fn route_label(&self) -> &str {
        self.route
            .as_deref()
            .map_or(UNMATCHED_ROUTE, |r| r.name.as_str())
    }
}

struct InFlight(prometheus::IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        let gauge = self.app.metrics.in_flight.clone();
        gauge.inc();
        RequestCtx {
            started: Instant::now(),
            route: None,
            client_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            upstream_started: None,
            principal: None,
            _in_flight: InFlight(gauge),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        ctx.client_ip = self.client_ip(session);
        let path = session.req_header().uri.path();

        if path == "/health" {
            let method = &session.req_header().method;
            let response = if method == Method::GET || method == Method::HEAD {
                let (status, body) = self.app.health().await;
                ApiResponse::raw(status, body)
            } else {
                ApiResponse::method_not_allowed("GET, HEAD")
            };
            write_local_response(session, &response).await?;
            return Ok(true);
        }
        if api::is_local_path(path) {
            let response = match self.read_api_request(session, ctx.client_ip).await? {
                Ok(request) => api::dispatch(&self.app, request).await,
                Err(refusal) => refusal,
            };
            write_local_response(session, &response).await?;
            return Ok(true);
        }

        let header = session.req_header();
        let Some(route) = self.app.routes.find(request_host(header), path) else {
            write_local_response(session, &ApiResponse::not_found()).await?;
            return Ok(true);
        };
        ctx.route = Some(route.clone());
        // Limits come before any authentication work, so a flood cannot make us verify tokens.
        if let Some(spec) = &route.rate_limit {
            let key = crate::ratelimit::ip_key(ctx.client_ip);
            let decision = self
                .app
                .rate_limiter
                .check(&route.rate_limit_scope, &key, spec)
                .await;
            if !decision.allowed {
                write_local_response(session, &crate::ratelimit::rejection(&decision)).await?;
                return Ok(true);
            }
        }
        let header = session.req_header();
        let target = header.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let verdict = policy::authorize(
            &self.app,
            route.policy,
            &route.roles,
            route.require_verified_email,
            &header.headers,
            Some(target),
        )
        .await;
        match verdict {
            Verdict::Allow(principal) => {
                if principal.is_some() {
                    route.metrics.allowed().inc();
                }
                ctx.principal = principal;
                Ok(false)
            }
            Verdict::Refuse { response, reason } => {
                route.metrics.denied(reason).inc();
                write_local_response(session, &response).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.as_deref() else {
            return Error::e_explain(ErrorType::InternalError, "no route selected");
        };
        let upstream = &route.upstream;
        let mut peer = HttpPeer::new(upstream.addr, upstream.tls, upstream.host.clone());
        peer.options.connection_timeout = Some(route.connect_timeout);
        peer.options.total_connection_timeout = Some(route.connect_timeout);
        peer.options.read_timeout = Some(route.read_timeout);
        peer.options.write_timeout = Some(route.read_timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let spoofed = self
            .app
            .identity_headers
            .spoofed(upstream_request.headers.keys());
        for name in &spoofed {
            upstream_request.remove_header(name);
            tracing::warn!(
                target: SECURITY,
                event = "spoofed_identity_header_removed",
                header = name.as_str(),
                route = ctx.route_label(),
                client_ip = %ctx.client_ip,
            );
        }
        self.set_forwarding_headers(session, upstream_request, ctx.client_ip)?;
        if let Some(principal) = &ctx.principal {
            self.set_identity_headers(upstream_request, principal)?;
        }
        ctx.upstream_started = Some(Instant::now());
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut pingora::http::ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let (Some(started), Some(route)) = (ctx.upstream_started.take(), &ctx.route) {
            route
                .metrics
                .upstream_duration()
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let (status, kind) = classify_failure(e);
        if let Some(kind) = kind {
            self.app
                .metrics
                .upstream_errors
                .with_label_values(&[ctx.route_label(), kind])
                .inc();
            tracing::warn!(route = ctx.route_label(), error = %e, "upstream failed");
        }
        let Some(status) = status else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        if session.response_written().is_none() {
            let response = failure_response(status);
            // The connection is not reused after a proxy failure: say so.
            if let Err(write_error) = respond::write_closing_response(session, &response).await {
                tracing::debug!(error = %write_error, "cannot send error response");
            }
        }
        FailToProxy {
            error_code: status.as_u16(),
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Self::CTX) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed = ctx.started.elapsed().as_secs_f64();
        if let Some(route) = &ctx.route {
            route.metrics.requests(status).inc();
            route.metrics.request_duration().observe(elapsed);
            return;
        }
        let route = if is_local(session.req_header().uri.path()) {
            LOCAL_ROUTE
        } else {
            UNMATCHED_ROUTE
        };
        let metrics = &self.app.metrics;
        metrics
            .requests
            .with_label_values(&[route, status_label(status)])
            .inc();
        metrics
            .request_duration
            .with_label_values(&[route])
            .observe(elapsed);
    }
}

impl Gateway {
    /// Tells the upstream who the request comes from, in headers it can trust (every client
    /// copy was removed just before).
    fn set_identity_headers(
        &self,
        upstream_request: &mut RequestHeader,
        principal: &Principal,
    ) -> Result<()> {
        let names = &self.app.identity_headers.wire;
        let values = principal.header_values();
        upstream_request.insert_header(names.user_id.clone(), values.user_id)?;
        upstream_request.insert_header(names.email.clone(), values.email)?;
        upstream_request.insert_header(names.roles.clone(), values.roles)?;
        upstream_request.insert_header(names.session_id.clone(), values.session_id)?;
        upstream_request.insert_header(names.email_verified.clone(), values.email_verified)?;
        if let Some(name) = &names.assertion
            && let Some(assertion) = self.app.gatekeeper.assertion(principal, &self.app.keys)
        {
            upstream_request.insert_header(name.clone(), assertion)?;
        }
        Ok(())
    }

    fn client_ip(&self, session: &Session) -> IpAddr {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip().to_canonical());
        let forwarded = session
            .req_header()
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        client_ip::client_ip(peer, forwarded, &self.app.config.server.trusted_proxies)
    }

    /// Sets `X-Forwarded-For/-Proto/-Host`. A client's own `X-Forwarded-For` is kept only
    /// when it came through a trusted proxy.
    fn set_forwarding_headers(
        &self,
        session: &Session,
        upstream_request: &mut RequestHeader,
        client_ip: IpAddr,
    ) -> Result<()> {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_canonical());
        let trusted = &self.app.config.server.trusted_proxies;
        let peer_trusted = peer.is_some_and(|p| trusted.iter().any(|n| n.contains(&p)));
        let forwarded_for = match (
            peer_trusted,
            upstream_request.headers.get("x-forwarded-for"),
        ) {
            (true, Some(existing)) => {
                let existing = String::from_utf8_lossy(existing.as_bytes()).into_owned();
                let peer = peer.map_or_else(|| client_ip.to_string(), |p| p.to_string());
                format!("{existing}, {peer}")
            }
            _ => client_ip.to_string(),
        };
        upstream_request.insert_header("x-forwarded-for", forwarded_for)?;
        upstream_request.insert_header("x-forwarded-proto", "http")?;
        if let Some(host) = request_host_value(session.req_header()) {
            upstream_request.insert_header("x-forwarded-host", host)?;
        }
        Ok(())
    }

    /// Reads a local API request: checks the size cap and returns either the request or
    /// the refusal to send. The outer `Result` is a broken connection.
    async fn read_api_request(
        &self,
        session: &mut Session,
        client_ip: IpAddr,
    ) -> Result<std::result::Result<ApiRequest, ApiResponse>> {
        let max = self.app.config.server.max_body_bytes;
        let header = session.req_header();
        let method = header.method.clone();
        let declared = header
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        if declared.is_some_and(|len| len > max) {
            return Ok(Err(payload_too_large(max)));
        }
        let expects_continue = header
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let body = if method == Method::GET || method == Method::HEAD {
            Bytes::new()
        } else {
            if expects_continue {
                // The client waits for this before sending the body it announced.
                let proceed = pingora::http::ResponseHeader::build(StatusCode::CONTINUE, Some(0))?;
                session
                    .write_response_header(Box::new(proceed), false)
                    .await?;
            }
            let mut buf = BytesMut::new();
            while let Some(chunk) = session.read_request_body().await? {
                if buf.len() + chunk.len() > max {
                    return Ok(Err(payload_too_large(max)));
                }
                buf.extend_from_slice(&chunk);
            }
            buf.freeze()
        };
        let header = session.req_header();
        let user_agent = header
            .headers
            .get(http::header::USER_AGENT)
            .map(|v| {
                truncate_utf8(&String::from_utf8_lossy(v.as_bytes()), MAX_USER_AGENT).to_string()
            })
            .unwrap_or_default();
        Ok(Ok(ApiRequest {
            method,
            path: header.uri.path().to_string(),
            query: header.uri.query().map(str::to_string),
            headers: header.headers.clone(),
            body,
            client_ip,
            user_agent,
        }))
    }
}

/// Longest `User-Agent` kept for sessions and mails.
const MAX_USER_AGENT: usize = 256;

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn payload_too_large(max: usize) -> ApiResponse {
    ApiResponse::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        &format!("Request body exceeds {max} bytes"),
    )
}

fn is_local(path: &str) -> bool {
    path == "/health" || api::is_local_path(path)
}

/// The request's host: the `Host` header, or the authority of an absolute-form URI.
fn request_host(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.host())
}

/// The request's host as a header value (shared, not copied).
fn request_host_value(req: &RequestHeader) -> Option<http::HeaderValue> {
    match req.headers.get(http::header::HOST) {
        Some(host) => Some(host.clone()),
        None => req
            .uri
            .host()
            .and_then(|h| http::HeaderValue::from_str(h).ok()),
    }
}

/// The status to answer for a proxy failure, and the metric kind when the upstream is to blame.
fn classify_failure(e: &Error) -> (Option<StatusCode>, Option<&'static str>) {
    use ErrorType::*;
    match e.etype() {
        HTTPStatus(code) => (StatusCode::from_u16(*code).ok(), None),
        ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError | TLSHandshakeFailure
        | TLSHandshakeTimedout | ConnectProxyFailure | InvalidCert => {
            (Some(StatusCode::BAD_GATEWAY), Some("connect"))
        }
        ReadTimedout | WriteTimedout if e.esource() == &ErrorSource::Upstream => {
            (Some(StatusCode::GATEWAY_TIMEOUT), Some("timeout"))
        }
        _ => match e.esource() {
            ErrorSource::Upstream => (Some(StatusCode::BAD_GATEWAY), Some("other")),
            ErrorSource::Downstream => match e.etype() {
                WriteError | ReadError | ConnectionClosed => (None, None),
                _ => (Some(StatusCode::BAD_REQUEST), None),
            },
            ErrorSource::Internal | ErrorSource::Unset => {
                (Some(StatusCode::INTERNAL_SERVER_ERROR), None)
            }
        },
    }
}

fn failure_response(status: StatusCode) -> ApiResponse {
    let (code, message) = match status {
        StatusCode::BAD_GATEWAY => (
            "upstream_unavailable",
            "The upstream service is unavailable",
        ),
        StatusCode::GATEWAY_TIMEOUT => (
            "upstream_timeout",
            "The upstream service did not answer in time",
        ),
        StatusCode::BAD_REQUEST => ("bad_request", "Malformed request"),
        _ => ("internal_error", "Internal error"),
    };
    ApiResponse::error(status, code, message)
}
