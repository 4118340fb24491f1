//! `Strict-Transport-Security` (RFC 6797) on every answer of the TLS listener: proxied,
//! local, portal pages and Pingora's own errors alike, since all go through the session's
//! response filters. Installed only when TLS is on, so a plain listener's requests build no
//! module context (the gateway otherwise runs with none, see `Gateway::init_downstream_modules`).

use std::any::Any;

use async_trait::async_trait;
use http::HeaderValue;
use http::header::STRICT_TRANSPORT_SECURITY;
use pingora::http::ResponseHeader;
use pingora::modules::http::{HttpModule, HttpModuleBuilder, Module};
use pingora::prelude::*;

use crate::gateway::live::Current;

/// Builds each request's [`Hsts`] from the generation serving when it starts (HSTS's keys
/// take effect with a reload).
pub struct HstsBuilder {
    current: Current,
}

impl HstsBuilder {
    /// Reads the header from whichever generation `current` holds.
    pub fn new(current: Current) -> Self {
        Self { current }
    }
}

impl HttpModuleBuilder for HstsBuilder {
    fn init(&self) -> Module {
        Box::new(Hsts(self.current.load().hsts.clone()))
    }
}

/// One request's HSTS header, or none (`tls.hsts_max_age = "0s"`).
struct Hsts(Option<HeaderValue>);

#[async_trait]
impl HttpModule for Hsts {
    async fn response_header_filter(
        &mut self,
        response: &mut ResponseHeader,
        _end_of_stream: bool,
    ) -> Result<()> {
        // The gateway's policy replaces an upstream's: it owns the TLS of this host. Turned
        // off, it leaves an upstream's header as it is.
        if let Some(value) = &self.0 {
            response.insert_header(STRICT_TRANSPORT_SECURITY, value.clone())?;
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
