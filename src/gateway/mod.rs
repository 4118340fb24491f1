//! The Pingora side: one `ProxyHttp` impl whose hooks each do one thing and delegate to
//! plain functions. Pingora types stay in this module.
//!
//! The hot path for a proxied request is: `request_filter` (canonical request, route match,
//! policy) → `upstream_peer` → `upstream_request_filter` (canonical target and Host, strip
//! spoofed identity, proxy-only headers and the gateway's credentials, set forwarding
//! headers) → upstream → `logging` (metrics).

pub mod admin;
pub mod canonical;
pub mod client_ip;
pub mod connections;
mod forwarded;
pub mod forwarding;
mod live;
pub mod redirect;
pub mod reload;
mod respond;
pub mod routes;
pub mod tls;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode};
use pingora::http::RequestHeader;
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{ErrorSource, ErrorType};

use crate::access::credentials::Carrier;
use crate::access::gatekeeper::Principal;
use crate::access::policy::{self, Verdict};
use crate::access::refusal::Refusal as Refused;
use crate::api::{self, ApiRequest};
use crate::app::App;
use crate::config;
use crate::metrics::status_label;
use crate::portal::{Page, Portal};
use crate::reply::Reply;
use crate::telemetry::{self, SECURITY};
use canonical::Refusal;
use forwarding::ProxyHeaders;
use routes::{Route, RouteTable};

pub use live::LiveGateway;
pub use respond::{write_local_response, write_page};

/// The canonical path the request was decided on, without its query (which may carry
/// tokens): what logs may name of a request.
fn canonical_path<'a>(session: &'a Session, ctx: &'a RequestCtx) -> &'a str {
    ctx.canonical_target.as_deref().map_or_else(
        || session.req_header().uri.path(),
        |t| t.split('?').next().unwrap_or(t),
    )
}

/// How long a pooled connection to an upstream may sit unused before it is closed.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Route label for requests the gateway answers itself.
const LOCAL_ROUTE: &str = "local";
/// Route label for requests no route matched.
const UNMATCHED_ROUTE: &str = "unmatched";

/// The proxy service under one generation of the configuration (the listener serves
/// whichever is current: [`live::LiveGateway`]).
pub struct Gateway {
    app: Arc<App>,
    /// Which configuration this is: 1 at start, one more with each reload.
    generation: u64,
    /// The sign-in portal: its templates, keys and where its pages live.
    portal: Arc<Portal>,
    /// The configured routes, upstreams resolved.
    routes: RouteTable,
    /// Headers only a trusted proxy may send.
    proxy_headers: ProxyHeaders,
    /// Headers no client may send upstream.
    strip_headers: ProxyHeaders,
    /// Whether the main listener speaks TLS: upstreams are told `X-Forwarded-Proto: https`.
    tls: bool,
    /// `Strict-Transport-Security` for every answer over TLS (`tls::hsts`), when on.
    hsts: Option<http::HeaderValue>,
}

impl Gateway {
    /// Wraps the shared application state and builds the portal and the route table; fails
    /// on a broken template override or a route the config cannot express (see
    /// [`Portal::new`], [`RouteTable::from_config`]).
    pub fn new(app: Arc<App>) -> anyhow::Result<Self> {
        let portal = Portal::new(
            &app.config,
            app.languages.clone(),
            app.keys.refresh_rotation_key(),
        )
        .map_err(|e| anyhow::anyhow!(e))?;
        let routes =
            RouteTable::from_config(&app.config, &app.metrics).map_err(|e| anyhow::anyhow!(e))?;
        let proxy_headers = ProxyHeaders::new(&app.config.server.proxy_headers);
        let strip_headers = ProxyHeaders::new(&app.config.server.strip_headers);
        let tls = app.config.tls.enabled();
        let hsts = app
            .config
            .tls
            .hsts_value()
            .and_then(|value| http::HeaderValue::from_str(&value).ok());
        Ok(Self {
            app,
            generation: 1,
            portal: Arc::new(portal),
            routes,
            proxy_headers,
            strip_headers,
            tls,
            hsts,
        })
    }

    /// The instance this generation serves with.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Which configuration this is: 1 at start, one more with each reload.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The routes, in match order.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The same generation with `routes` (its upstreams resolved again).
    fn with_routes(&self, routes: RouteTable) -> Self {
        Self {
            app: self.app.clone(),
            generation: self.generation,
            portal: self.portal.clone(),
            routes,
            proxy_headers: self.proxy_headers.clone(),
            strip_headers: self.strip_headers.clone(),
            tls: self.tls,
            hsts: self.hsts.clone(),
        }
    }
}

/// Per-request state shared across the hooks.
pub struct RequestCtx {
    started: Instant,
    route: Option<Arc<Route>>,
    client_ip: IpAddr,
    upstream_started: Option<Instant>,
    /// Whether the request was sent to its route's upstream (for the access log).
    proxied: bool,
    /// The address the connection comes from.
    peer: IpAddr,
    /// Whether the peer is in `trusted_proxies` (it may send forwarding headers).
    peer_trusted: bool,
    /// Whether the gateway answered the request itself (metrics label).
    local: bool,
    /// The canonical origin-form target to forward, when it differs from the one received.
    canonical_target: Option<String>,
    /// The canonical `Host` to forward, when it differs from the one received.
    canonical_host: Option<http::HeaderValue>,
    /// Who the request comes from, on routes that require it.
    principal: Option<Principal>,
    /// Cookies to set on the upstream's answer: the browser's access was renewed.
    renewed_cookies: Vec<String>,
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

    /// No downstream modules. Pingora's default installs a response-compression module,
    /// disabled, whose per-request context is still built and consulted on every request
    /// and response; the gateway never compresses (benches/load.sh counts what it costs:
    /// bare Pingora with and without it).
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    fn new_ctx(&self) -> Self::CTX {
        let gauge = self.app.metrics.in_flight.clone();
        gauge.inc();
        RequestCtx {
            started: Instant::now(),
            route: None,
            client_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            upstream_started: None,
            proxied: false,
            peer: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            peer_trusted: false,
            local: false,
            canonical_target: None,
            canonical_host: None,
            principal: None,
            renewed_cookies: Vec::new(),
            _in_flight: InFlight(gauge),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        self.note_client(session, ctx);
        if is_trace(&session.req_header().method) {
            // An upstream that echoes the request would show the client its identity
            // headers and assertion (cross-site tracing).
            ctx.local = true;
            let response = Reply::method_not_allowed(ASTERISK_ALLOW);
            write_local_response(session, &response).await?;
            return Ok(true);
        }
        let route = match self.destination(session.req_header(), ctx) {
            Destination::Route(route) => route,
            local => {
                self.answer_locally(session, ctx, local).await?;
                return Ok(true);
            }
        };
        ctx.route = Some(route.clone());
        // Limits come before any authentication work, so a flood cannot make us verify tokens.
        if let Some(refusal) = self.rate_limit(&route, ctx).await {
            self.write_refusal(session, ctx, Refused::RateLimited, &refusal)
                .await?;
            return Ok(true);
        }
        self.authorize(session, ctx, &route).await
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
        peer.options.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // The upstream gets the target and Host the policy saw (RFC 9112 §3.2.2: an
        // absolute-form authority replaces Host; the target goes on in origin-form).
        if let Some(target) = &ctx.canonical_target {
            upstream_request.set_raw_path(target.as_bytes())?;
        }
        if let Some(host) = &ctx.canonical_host {
            upstream_request.insert_header(http::header::HOST, host.clone())?;
        } else if !upstream_request.headers.contains_key(http::header::HOST)
            && let Some(route) = ctx.route.as_deref()
        {
            // An HTTP/1.0 request may come without Host; it goes on as HTTP/1.1, which needs
            // one (RFC 9112 §3.2): the upstream's own, as nginx's proxy_pass sends.
            upstream_request.insert_header(http::header::HOST, route.upstream.authority())?;
        }
        self.strip_client_headers(upstream_request, ctx)?;
        self.set_forwarding_headers(session, upstream_request, ctx)?;
        if let Some(principal) = &ctx.principal {
            self.set_identity_headers(upstream_request, principal)?;
        }
        ctx.upstream_started = Some(Instant::now());
        ctx.proxied = true;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut pingora::http::ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        respond::close_when_stopping(session);
        for cookie in ctx.renewed_cookies.drain(..) {
            upstream_response.append_header(http::header::SET_COOKIE, cookie)?;
        }
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
            tracing::warn!(
                route = ctx.route_label(),
                upstream = ctx
                    .route
                    .as_deref()
                    .map(|r| tracing::field::display(r.upstream.addr)),
                error = e.etype().as_str(),
                "upstream failed"
            );
        } else if e.esource() == &ErrorSource::Downstream {
            // A client that goes away or sends garbage is the client's business: at error
            // level every aborted download would be a line in error.log.
            tracing::debug!(
                route = ctx.route_label(),
                error = e.etype().as_str(),
                "client failed"
            );
        } else {
            tracing::warn!(
                route = ctx.route_label(),
                error = e.etype().as_str(),
                "request failed"
            );
        }
        let Some(status) = status else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        if session.response_written().is_none() {
            let mut response = failure_response(status);
            // A renewed browser must still get its rotated refresh token, or its next
            // request would present the old one and end the session as a stolen token.
            for cookie in ctx.renewed_cookies.drain(..) {
                response = response.with_header(http::header::SET_COOKIE, cookie);
            }
            // The connection is not reused after a proxy failure: say so.
            let page = upstream_refusal(status)
                .and_then(|refusal| self.browser_answer(session, ctx, refusal, &response));
            let written = match page {
                Some(page) => respond::write_closing_page(session, &page).await,
                None => respond::write_closing_response(session, &response).await,
            };
            if let Err(write_error) = written {
                tracing::debug!(error = %write_error, "cannot send error response");
            }
        }
        FailToProxy {
            error_code: status.as_u16(),
            can_reuse_downstream: false,
        }
    }

    /// Failures are logged by `fail_to_proxy`, at a level that fits who failed; Pingora's own
    /// line would be at ERROR for every aborted client, with the request's query string.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Self::CTX, _error: &Error) -> bool {
        true
    }

    /// What Pingora's remaining log lines say of a request: method, path and route, never the
    /// query string (it may carry tokens).
    fn request_summary(&self, session: &Session, ctx: &Self::CTX) -> String {
        let path = canonical_path(session, ctx);
        format!(
            "{} {path}, route: {}",
            session.req_header().method,
            ctx.route_label()
        )
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Self::CTX) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed = ctx.started.elapsed().as_secs_f64();
        if self.app.config.logging.access_log {
            self.access_log(session, ctx, status, elapsed);
        }
        if let Some(route) = &ctx.route {
            route.metrics.requests(status).inc();
            route.metrics.request_duration().observe(elapsed);
            return;
        }
        let route = if ctx.local {
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
    /// Writes the request's line of the access log (see [`telemetry::access`]).
    fn access_log(&self, session: &Session, ctx: &RequestCtx, status: u16, elapsed: f64) {
        let route = match &ctx.route {
            Some(route) => route.name.as_str(),
            None if ctx.local => LOCAL_ROUTE,
            None => UNMATCHED_ROUTE,
        };
        telemetry::access(&telemetry::AccessRecord {
            client: ctx.client_ip,
            method: session.req_header().method.as_str(),
            path: canonical_path(session, ctx),
            route,
            status,
            upstream: ctx
                .route
                .as_deref()
                .filter(|_| ctx.proxied)
                .map(|r| r.upstream.addr),
            duration_ms: elapsed * 1000.0,
            bytes: session.as_downstream().body_bytes_sent(),
            user_id: ctx.principal.as_ref().map(Principal::user_id_text),
        });
    }

    /// Records where the request comes from: the peer, whether it is a trusted proxy, and
    /// the client address its `X-Forwarded-For` chain gives.
    fn note_client(&self, session: &Session, ctx: &mut RequestCtx) {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip().to_canonical());
        let trusted = &self.app.config.server.trusted_proxies;
        ctx.peer = peer;
        ctx.peer_trusted = trusted.iter().any(|net| net.contains(&peer));
        ctx.client_ip = client_ip::client_ip(
            peer,
            session
                .req_header()
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok()),
            trusted,
        );
    }

    /// Answers a request the gateway serves itself (or refuses, or knows no route for).
    async fn answer_locally(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        destination: Destination,
    ) -> Result<()> {
        // An unmatched request is not the gateway's own: its metrics say "unmatched".
        ctx.local = !matches!(destination, Destination::Unmatched);
        match destination {
            Destination::Refuse(refusal) => {
                let response =
                    Reply::error(StatusCode::BAD_REQUEST, refusal.code(), refusal.message());
                respond::write_closing_response(session, &response).await
            }
            Destination::Asterisk => {
                let response = Reply::empty(StatusCode::NO_CONTENT)
                    .with_header(http::header::ALLOW, ASTERISK_ALLOW);
                write_local_response(session, &response).await
            }
            Destination::Health => self.answer_health(session).await,
            Destination::Favicon => self.answer_favicon(session).await,
            Destination::Local { path, query } => {
                let original = if ctx.peer_trusted && api::is_forward_auth(&path) {
                    match self.original_request(session.req_header()) {
                        Ok(original) => original,
                        Err(refusal) => return write_local_response(session, &refusal).await,
                    }
                } else {
                    None
                };
                self.answer_api(session, ctx.client_ip, path, query, original)
                    .await
            }
            Destination::Portal { path, query } => {
                self.answer_portal(session, ctx.client_ip, path, query)
                    .await
            }
            // A route is proxied, never answered here.
            Destination::Unmatched | Destination::Route(_) => {
                write_local_response(session, &Reply::not_found()).await
            }
        }
    }

    /// `/health`: the health report to `GET` and `HEAD`, 405 to anything else.
    async fn answer_health(&self, session: &mut Session) -> Result<()> {
        let method = &session.req_header().method;
        let response = if method == Method::GET || method == Method::HEAD {
            let (status, body) = self.app.health().await;
            Reply::json(status, body)
        } else {
            Reply::method_not_allowed("GET, HEAD")
        };
        write_local_response(session, &response).await
    }

    /// `/favicon.ico`: the portal's icon to `GET` and `HEAD`, 405 to anything else.
    async fn answer_favicon(&self, session: &mut Session) -> Result<()> {
        match crate::portal::favicon(&self.portal, &session.req_header().method) {
            Some(page) => write_page(session, &page).await,
            None => {
                let refusal = Reply::method_not_allowed("GET, HEAD");
                write_local_response(session, &refusal).await
            }
        }
    }

    /// The account API and the JWKS, answered in-process.
    async fn answer_api(
        &self,
        session: &mut Session,
        client_ip: IpAddr,
        path: String,
        query: Option<String>,
        original: Option<api::Original>,
    ) -> Result<()> {
        let response = match self
            .read_api_request(session, client_ip, path, query)
            .await?
        {
            Ok(mut request) => {
                request.original = original;
                api::dispatch(&self.app, request).await
            }
            Err(refusal) => refusal,
        };
        write_local_response(session, &response).await
    }

    /// The portal's pages; a request refused before it reaches them gets a page too.
    async fn answer_portal(
        &self,
        session: &mut Session,
        client_ip: IpAddr,
        path: String,
        query: Option<String>,
    ) -> Result<()> {
        let page = match self
            .read_api_request(session, client_ip, path, query)
            .await?
        {
            Ok(request) => crate::portal::dispatch(&self.app, &self.portal, request).await,
            Err(refusal) => crate::portal::refusal_page(
                &self.app,
                &self.portal,
                &session.req_header().headers,
                &refusal,
            ),
        };
        write_page(session, &page).await
    }

    /// The route's per-address limit: the 429 to send when the client is over it.
    async fn rate_limit(&self, route: &Route, ctx: &RequestCtx) -> Option<Reply> {
        let spec = route.rate_limit.as_ref()?;
        let key = crate::ratelimit::ip_key(ctx.client_ip);
        let decision = self
            .app
            .rate_limiter
            .check(&route.rate_limit_scope, &key, spec)
            .await;
        (!decision.allowed).then(|| crate::ratelimit::rejection(&decision))
    }

    /// Decides the route's policy for the request (renewing a browser's access when it can)
    /// and either lets it through, noting who it comes from, or writes the refusal.
    async fn authorize(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        route: &Route,
    ) -> Result<bool> {
        let header = session.req_header();
        let target = request_target(session, ctx);
        let need = policy::Requirement::of(&route.guard, &header.method, ctx.client_ip);
        let browser = api::browser::Browser {
            app: &self.app,
            headers: &header.headers,
            client_ip: ctx.client_ip,
        };
        let verdict = policy::authorize(
            &self.app.access,
            need,
            &header.headers,
            Some(target),
            &browser,
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
            Verdict::Renewed { principal, cookies } => {
                route.metrics.allowed().inc();
                ctx.principal = Some(principal);
                ctx.renewed_cookies = cookies;
                Ok(false)
            }
            Verdict::Refuse {
                response,
                refusal,
                reason,
            } => {
                route.metrics.denied(reason).inc();
                self.write_refusal(session, ctx, refusal, &response).await?;
                Ok(true)
            }
        }
    }

    /// Writes the refusal of a proxied request: a browser's navigation gets its page or
    /// redirect, any other client `response`, the API answer.
    async fn write_refusal(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        refusal: Refused,
        response: &Reply,
    ) -> Result<()> {
        match self.browser_answer(session, ctx, refusal, response) {
            Some(page) => write_page(session, &page).await,
            None => write_local_response(session, response).await,
        }
    }

    /// What a browser's navigation is answered for `refusal` (the portal's
    /// [`crate::portal::browser_answer`]); `None` for any other client.
    fn browser_answer(
        &self,
        session: &Session,
        ctx: &RequestCtx,
        refusal: Refused,
        response: &Reply,
    ) -> Option<Page> {
        crate::portal::browser_answer(
            &self.app,
            &self.portal,
            &session.req_header().headers,
            refusal,
            response,
            request_target(session, ctx),
        )
    }

    /// Tells the upstream who the request comes from, in headers it can trust (every client
    /// copy was removed just before).
    fn set_identity_headers(
        &self,
        upstream_request: &mut RequestHeader,
        principal: &Principal,
    ) -> Result<()> {
        for header in self.app.access.identity_headers_of(principal) {
            upstream_request.insert_header(header.wire.clone(), header.value)?;
        }
        Ok(())
    }

    /// Where a request goes, decided on its canonical form. Records in `ctx` what the
    /// upstream must be sent instead of what was received.
    fn destination(&self, header: &RequestHeader, ctx: &mut RequestCtx) -> Destination {
        let canonical = match canonical::canonicalize(
            &header.method,
            header.version,
            header.raw_path(),
            &header.headers,
            header.uri.authority().map(|a| a.as_str()),
        ) {
            Ok(canonical) => canonical,
            Err(refusal) => return Destination::Refuse(refusal),
        };
        if let Err(refusal) = check_framing(&header.headers) {
            return Destination::Refuse(refusal);
        }
        if canonical.target_changed {
            ctx.canonical_target = Some(canonical.origin_form());
        }
        if canonical.host_changed {
            ctx.canonical_host = canonical
                .authority
                .as_deref()
                .and_then(|a| http::HeaderValue::from_str(a).ok());
        }
        self.route_destination(&canonical)
    }

    /// Where a canonical request goes: the gateway's own paths, a route, or nowhere. The one
    /// reading of the route table for both ways in (forward-auth asks it of the original
    /// request).
    fn route_destination(&self, canonical: &canonical::CanonicalRequest<'_>) -> Destination {
        if canonical.asterisk {
            return Destination::Asterisk;
        }
        let path = canonical.path.as_ref();
        let portal = self.portal.owns(path);
        if config::is_local_path(path) || portal {
            return local_destination(canonical, portal);
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) && self.is_local_ignoring_case(path) {
            // `/API/auth/login` is not the account API here, but a case-insensitive upstream
            // would serve it as its own: a login outside the lockout and the rate limits.
            return Destination::Refuse(Refusal::AmbiguousCase);
        }
        match self
            .routes
            .route_for(canonical.host.as_deref(), path, canonical.flags)
        {
            Ok(Some(route)) => Destination::Route(route.clone()),
            Ok(None) => Destination::Unmatched,
            Err(refusal) => Destination::Refuse(refusal),
        }
    }

    /// Whether `path`, ignoring letter case, is one the gateway answers itself (the portal's
    /// pages included).
    fn is_local_ignoring_case(&self, path: &str) -> bool {
        let portal = &self.app.config.portal;
        config::LOCAL_PATHS
            .iter()
            .any(|local| config::is_under(path, local, true))
            || (portal.enabled && config::is_under(path, &portal.path_prefix, true))
    }

    /// Removes what a client may not send upstream: copies of the identity headers (on every
    /// route), headers only a trusted proxy may set (from other peers), and the gateway's own
    /// credentials (its cookies; `Authorization`, unless the route forwards a client's own
    /// that is not a Portcullis token).
    fn strip_client_headers(
        &self,
        upstream_request: &mut RequestHeader,
        ctx: &RequestCtx,
    ) -> Result<()> {
        let identity = &self.app.access.identity_headers;
        let spoofed = identity.spoofed(upstream_request.headers.keys());
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
        let removed = forwarding::names_matching(&upstream_request.headers, |name| {
            self.strip_headers.matches(name)
                || (!ctx.peer_trusted && self.proxy_headers.matches(name))
        });
        for name in &removed {
            upstream_request.remove_header(name);
        }
        let access = &self.app.access;
        let carries_token = |pair: &str| access.carries_own_credential(pair, Carrier::CookiePair);
        match forwarding::cookies_without_credentials(&upstream_request.headers, carries_token) {
            None => {}
            Some(None) => {
                upstream_request.remove_header(&http::header::COOKIE);
            }
            Some(Some(rest)) => {
                upstream_request.insert_header(http::header::COOKIE, rest)?;
            }
        }
        let keep_foreign = ctx
            .route
            .as_deref()
            .is_some_and(|r| r.forward_authorization);
        if forwarding::must_remove_authorization(&upstream_request.headers, keep_foreign, |t| {
            access.carries_own_credential(t, Carrier::Authorization)
        }) {
            upstream_request.remove_header(&http::header::AUTHORIZATION);
        }
        Ok(())
    }

    /// Sets `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Real-IP`.
    /// A trusted proxy's `X-Forwarded-For` (extended with its address) and `https` proto are
    /// kept; every other client's were removed before. Over the gateway's own TLS the proto
    /// is `https`. `X-Forwarded-Host` is always the
    /// canonical host.
    fn set_forwarding_headers(
        &self,
        session: &Session,
        upstream_request: &mut RequestHeader,
        ctx: &RequestCtx,
    ) -> Result<()> {
        let client = http::HeaderValue::from_str(&ctx.client_ip.to_string())
            .map_err(|_| Error::explain(ErrorType::InternalError, "client address"))?;
        let forwarded_for =
            if ctx.peer_trusted && upstream_request.headers.contains_key("x-forwarded-for") {
                let mut chain = String::new();
                for line in upstream_request.headers.get_all("x-forwarded-for") {
                    chain.push_str(&String::from_utf8_lossy(line.as_bytes()));
                    chain.push_str(", ");
                }
                chain.push_str(&ctx.peer.to_string());
                http::HeaderValue::from_str(&chain).unwrap_or_else(|_| client.clone())
            } else {
                client.clone()
            };
        upstream_request.insert_header("x-forwarded-for", forwarded_for)?;
        upstream_request.insert_header("x-real-ip", client)?;
        let https_from_proxy = ctx.peer_trusted
            && upstream_request
                .headers
                .get("x-forwarded-proto")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
        let proto = if self.tls || https_from_proxy {
            "https"
        } else {
            "http"
        };
        upstream_request.insert_header("x-forwarded-proto", proto)?;
        // The host the policy checked, whoever sent another: an upstream that builds its
        // virtual host or links from X-Forwarded-Host must not see one that was not routed.
        let host = match &ctx.canonical_host {
            Some(host) => Some(host.clone()),
            None => session
                .req_header()
                .headers
                .get(http::header::HOST)
                .cloned(),
        };
        match host {
            Some(host) => upstream_request.insert_header("x-forwarded-host", host)?,
            None => {
                upstream_request.remove_header("x-forwarded-host");
            }
        }
        Ok(())
    }

    /// Reads a local API request: checks the size cap and returns either the request or
    /// the refusal to send. The outer `Result` is a broken connection.
    async fn read_api_request(
        &self,
        session: &mut Session,
        client_ip: IpAddr,
        path: String,
        query: Option<String>,
    ) -> Result<std::result::Result<ApiRequest, Reply>> {
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
        let body = if method == Method::GET || method == Method::HEAD {
            Bytes::new()
        } else {
            match self.read_body(session, max).await? {
                Ok(body) => body,
                Err(refusal) => return Ok(Err(refusal)),
            }
        };
        let header = session.req_header();
        let user_agent = header
            .headers
            .get(http::header::USER_AGENT)
            .map(|v| shown_user_agent(&String::from_utf8_lossy(v.as_bytes())))
            .unwrap_or_default();
        Ok(Ok(ApiRequest {
            method,
            path,
            query,
            headers: header.headers.clone(),
            body,
            client_ip,
            user_agent,
            original: None,
        }))
    }

    /// Reads the body of an account-API request within `server.body_read_timeout`, first
    /// answering `100 Continue` when the client waits for it: the body, or the refusal to
    /// send (413 over `max` bytes, 408 too slow). The outer `Result` is a broken connection.
    async fn read_body(
        &self,
        session: &mut Session,
        max: usize,
    ) -> Result<std::result::Result<Bytes, Reply>> {
        let expects_continue = session
            .req_header()
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if expects_continue {
            // The client waits for this before sending the body it announced.
            let proceed = pingora::http::ResponseHeader::build(StatusCode::CONTINUE, Some(0))?;
            session
                .write_response_header(Box::new(proceed), false)
                .await?;
        }
        let deadline = self.app.config.server.body_read_timeout.get();
        match tokio::time::timeout(deadline, read_capped_body(session, max)).await {
            Ok(body) => Ok(body?.ok_or_else(|| payload_too_large(max))),
            Err(_) => {
                // The rest of the body is still on the wire: this connection is done.
                session.set_keepalive(None);
                Ok(Err(Reply::error(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "The request body did not arrive in time.",
                )))
            }
        }
    }
}

/// Where a request for one of the gateway's own paths goes (the portal's when `portal`):
/// refused when its path has what no local path takes (`%2F`, `;` parameters).
fn local_destination(canonical: &canonical::CanonicalRequest<'_>, portal: bool) -> Destination {
    if canonical.flags.encoded_slash {
        return Destination::Refuse(Refusal::EncodedSlash);
    }
    if canonical.flags.path_parameters {
        return Destination::Refuse(Refusal::PathParameters);
    }
    let path = canonical.path.as_ref();
    if path == "/health" {
        return Destination::Health;
    }
    if path == "/favicon.ico" {
        return Destination::Favicon;
    }
    let (path, query) = (path.to_owned(), canonical.query.map(str::to_owned));
    if portal {
        Destination::Portal { path, query }
    } else {
        Destination::Local { path, query }
    }
}

/// The request's target as decided on: the canonical one when it differs from the one
/// received (where a browser returns after signing in, or tries again).
fn request_target<'a>(session: &'a Session, ctx: &'a RequestCtx) -> &'a str {
    match &ctx.canonical_target {
        Some(target) => target.as_str(),
        None => session
            .req_header()
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str()),
    }
}

/// The refusal a browser is shown for a proxy failure answered with `status`: 502 and 504
/// are the upstream's; anything else (a malformed request, a bug) keeps its API answer.
fn upstream_refusal(status: StatusCode) -> Option<Refused> {
    match status {
        StatusCode::BAD_GATEWAY => Some(Refused::UpstreamDown),
        StatusCode::GATEWAY_TIMEOUT => Some(Refused::UpstreamTimeout),
        _ => None,
    }
}

/// `TRACE` and `TRACK`, which the gateway never passes on (RFC 9110 §9.3.8).
fn is_trace(method: &Method) -> bool {
    // Any case: some servers (Werkzeug, for one) upper-case the method they receive.
    let name = method.as_str();
    name.eq_ignore_ascii_case("TRACE") || name.eq_ignore_ascii_case("TRACK")
}

/// What `OPTIONS *` answers: the methods routes may carry.
const ASTERISK_ALLOW: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Reads a request body of at most `max` bytes; `None` when it is longer.
async fn read_capped_body(session: &mut Session, max: usize) -> Result<Option<Bytes>> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = session.read_request_body().await? {
        if buf.len() + chunk.len() > max {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(buf.freeze()))
}

/// Where a request goes.
enum Destination {
    /// Refused before routing (400).
    Refuse(Refusal),
    /// `OPTIONS *`.
    Asterisk,
    /// `/health`.
    Health,
    /// `/favicon.ico`: the portal's icon.
    Favicon,
    /// The account API, the JWKS: answered here, on the canonical path.
    Local { path: String, query: Option<String> },
    /// The portal's pages, on the canonical path.
    Portal { path: String, query: Option<String> },
    /// No route matches (404).
    Unmatched,
    /// Proxied under this route's policy.
    Route(Arc<Route>),
}

/// Message framing an upstream could read differently from the gateway: a `Content-Length`
/// that is a list (`90, 90`), repeated, or not plain digits (RFC 9110 §8.6, RFC 9112 §6.3),
/// and a `Transfer-Encoding` other than one plain `chunked` (Pingora would forward
/// `gzip, chunked` as `chunked`, dropping a coding, RFC 9112 §6.1).
/// Pingora reconciles identical duplicates for itself but would forward them as received.
fn check_framing(headers: &http::HeaderMap) -> std::result::Result<(), Refusal> {
    let mut codings = headers.get_all(http::header::TRANSFER_ENCODING).iter();
    match (codings.next(), codings.next()) {
        (None, _) => {}
        (Some(value), None)
            if value
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked") => {}
        _ => return Err(Refusal::Framing),
    }
    let mut lengths = headers.get_all(http::header::CONTENT_LENGTH).iter();
    match (lengths.next(), lengths.next()) {
        (None, _) => Ok(()),
        (Some(value), None)
            if !value.is_empty()
                && value.len() <= 19
                && value.as_bytes().iter().all(u8::is_ascii_digit) =>
        {
            Ok(())
        }
        _ => Err(Refusal::Framing),
    }
}

/// Longest `User-Agent` kept for sessions and mails.
const MAX_USER_AGENT: usize = 256;

/// A `User-Agent` as it is kept and shown (session lists, the console, `user sessions`):
/// cut to [`MAX_USER_AGENT`] bytes, with control characters and the bidirectional
/// formatting characters (Unicode's `Bidi_Control`, which can make text read backwards)
/// each replaced by U+FFFD.
fn shown_user_agent(raw: &str) -> String {
    let is_bidi = |c: char| matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_control() || is_bidi(c) {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect();
    truncate_utf8(&cleaned, MAX_USER_AGENT).to_string()
}

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

fn payload_too_large(max: usize) -> Reply {
    Reply::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        &format!("The request body is larger than {max} bytes."),
    )
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

fn failure_response(status: StatusCode) -> Reply {
    let (code, message) = match status {
        StatusCode::BAD_GATEWAY => (
            "upstream_unavailable",
            "The upstream service is unavailable.",
        ),
        StatusCode::GATEWAY_TIMEOUT => (
            "upstream_timeout",
            "The upstream service did not answer in time.",
        ),
        StatusCode::BAD_REQUEST => ("bad_request", "The request is malformed."),
        _ => (
            "internal_error",
            "Something went wrong on the server. Try again later.",
        ),
    };
    Reply::error(status, code, message)
}

#[cfg(test)]
mod tests {
    use super::{MAX_USER_AGENT, shown_user_agent};

    #[test]
    fn a_user_agent_is_kept_without_controls_or_bidi_overrides_and_cut() {
        let table = [
            ("Mozilla/5.0 (X11; Linux)", "Mozilla/5.0 (X11; Linux)"),
            ("evil\u{202E}txt.exe", "evil\u{FFFD}txt.exe"),
            ("a\tb\u{7}c", "a\u{FFFD}b\u{FFFD}c"),
            ("\u{2066}x\u{2069}\u{200F}", "\u{FFFD}x\u{FFFD}\u{FFFD}"),
            ("Сафари 17", "Сафари 17"),
        ];
        for (raw, shown) in table {
            assert_eq!(shown_user_agent(raw), shown, "{raw:?}");
        }
        let long = "я".repeat(MAX_USER_AGENT);
        let cut = shown_user_agent(&long);
        assert!(cut.len() <= MAX_USER_AGENT && cut.chars().all(|c| c == 'я'));
    }
}
