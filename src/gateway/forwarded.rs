//! Forward-auth's original request: what a trusted proxy says it is deciding
//! (`X-Forwarded-Method`, `X-Forwarded-Host`, `X-Forwarded-Uri`, `X-Forwarded-Proto`),
//! canonicalised by the function proxied requests go through and looked up in the same
//! route table, so one rule set serves both ways in.
//!
//! Only a peer in `server.trusted_proxies` is asked (the caller checks): from any other peer
//! these headers are the client's own and are ignored.

use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use pingora::http::RequestHeader;

use super::{Destination, Gateway, canonical};
use crate::api::Original;
use crate::reply::Reply;

/// The headers a proxy describes the original request with.
const METHOD: &str = "x-forwarded-method";
const HOST: &str = "x-forwarded-host";
const URI: &str = "x-forwarded-uri";
const PROTO: &str = "x-forwarded-proto";

/// The 400 for a description that is missing a part or given twice: the sentence "The
/// `header` header `predicate`."
fn malformed(header: &str, predicate: &str) -> Reply {
    Reply::error(
        StatusCode::BAD_REQUEST,
        "invalid_forwarded_request",
        &format!("The {header} header {predicate}."),
    )
}

/// The one value of `name`, `None` when absent; a repeated header is refused.
fn single<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> Result<Option<&'a HeaderValue>, Reply> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (_, Some(_)) => Err(malformed(name, "is given more than once")),
        (value, None) => Ok(value),
    }
}

impl Gateway {
    /// The original request a trusted proxy's forward-auth call describes: `None` when it
    /// describes none (no `X-Forwarded-Uri`, `-Method` or `-Host`: the query alone decides,
    /// as before). A description must name all three; it is refused (400) where a proxied
    /// request with that method, host and target would be.
    pub(super) fn original_request(
        &self,
        header: &RequestHeader,
    ) -> Result<Option<Original>, Reply> {
        let headers = &header.headers;
        let (method, host, uri) = (
            single(headers, METHOD)?,
            single(headers, HOST)?,
            single(headers, URI)?,
        );
        if method.is_none() && host.is_none() && uri.is_none() {
            return Ok(None);
        }
        let method = method.ok_or_else(|| malformed(METHOD, "is missing"))?;
        let host = host.ok_or_else(|| malformed(HOST, "is missing"))?;
        let uri = uri.ok_or_else(|| malformed(URI, "is missing"))?;
        if let Some(proto) = single(headers, PROTO)?
            && !matches!(proto.as_bytes(), b"http" | b"https")
        {
            return Err(malformed(PROTO, "must be http or https"));
        }
        // The host is X-Forwarded-Host's alone: a target in absolute form would name another
        // (proxies send the path: nginx's $request_uri, Caddy's {uri}, Traefik's).
        if !uri.as_bytes().starts_with(b"/") {
            return Err(malformed(URI, "must be a path starting with /"));
        }
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| malformed(METHOD, "is not an HTTP method"))?;
        let mut described = HeaderMap::with_capacity(1);
        described.insert(http::header::HOST, host.clone());
        let refused = |refusal: canonical::Refusal| {
            Reply::error(StatusCode::BAD_REQUEST, refusal.code(), refusal.message())
        };
        let canonical =
            canonical::canonicalize(&method, Version::HTTP_11, uri.as_bytes(), &described, None)
                .map_err(refused)?;
        let guard = match self.route_destination(&canonical) {
            Destination::Route(route) => Some(route.guard.clone()),
            Destination::Refuse(refusal) => return Err(refused(refusal)),
            _ => None,
        };
        Ok(Some(Original { method, guard }))
    }
}
