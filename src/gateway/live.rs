//! The listener's view of the configuration: each request takes the generation current when
//! it starts and is judged by it to the end, while a reload swaps in the next one for the
//! requests after it. No request is dropped and none sees half of each.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

use super::{Gateway, RequestCtx};

/// The current generation, shared by the listener and the reload.
pub type Current = Arc<ArcSwap<Gateway>>;

/// The proxy service: every hook is the hook of the generation its request started under.
pub struct LiveGateway {
    current: Current,
}

impl LiveGateway {
    /// Serves whatever `current` holds when each request begins.
    pub fn new(current: Current) -> Self {
        Self { current }
    }
}

/// A request's state and the generation that judges it.
pub struct LiveCtx {
    gateway: Arc<Gateway>,
    request: RequestCtx,
}

#[async_trait]
impl ProxyHttp for LiveGateway {
    type CTX = LiveCtx;

    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        let current = self.current.load();
        current.init_downstream_modules(modules);
        // TLS on or off needs a restart: the listener's modules are fixed at start.
        if current.tls {
            modules.add_module(Box::new(super::tls::hsts::HstsBuilder::new(
                self.current.clone(),
            )));
        }
    }

    fn new_ctx(&self) -> LiveCtx {
        let gateway = self.current.load_full();
        let request = gateway.new_ctx();
        LiveCtx { gateway, request }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut LiveCtx) -> Result<bool> {
        ctx.gateway.request_filter(session, &mut ctx.request).await
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut LiveCtx,
    ) -> Result<Box<HttpPeer>> {
        ctx.gateway.upstream_peer(session, &mut ctx.request).await
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut LiveCtx,
    ) -> Result<()> {
        ctx.gateway
            .upstream_request_filter(session, upstream_request, &mut ctx.request)
            .await
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut LiveCtx,
    ) -> Result<()> {
        ctx.gateway
            .upstream_response_filter(session, upstream_response, &mut ctx.request)
            .await
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut LiveCtx,
    ) -> FailToProxy {
        ctx.gateway
            .fail_to_proxy(session, e, &mut ctx.request)
            .await
    }

    fn suppress_error_log(&self, session: &Session, ctx: &LiveCtx, error: &Error) -> bool {
        ctx.gateway.suppress_error_log(session, &ctx.request, error)
    }

    fn request_summary(&self, session: &Session, ctx: &LiveCtx) -> String {
        ctx.gateway.request_summary(session, &ctx.request)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut LiveCtx) {
        ctx.gateway.logging(session, e, &mut ctx.request).await;
    }
}
