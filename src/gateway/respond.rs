//! Writing locally generated answers without dropping keep-alive.
//!
//! Pingora's `respond_error*` turns keep-alive off, so every local answer (404, 401, 429…)
//! goes through [`write_local_response`] instead. Once the server is stopping, every answer,
//! local or proxied, says `Connection: close` ([`keep_alive`]), so that no client sends
//! another request onto a connection about to close.

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderName;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use crate::gateway::connections::KEEP_ALIVE;
use crate::portal::Page;
use crate::reply::Reply;

/// Security headers on everything Portcullis answers itself (Helmet's set, minus HSTS,
/// which only makes sense over TLS).
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
];

/// Builds the response header for a local answer, security headers included.
pub fn local_response_header(response: &Reply, body_len: usize) -> Result<ResponseHeader> {
    answer_header(
        response.status,
        "application/json",
        body_len,
        &response.headers,
    )
}

/// The head of every answer the gateway writes itself (API replies and portal pages):
/// `Content-Type` when there is a body, its length, `Cache-Control: no-store` and the
/// [`SECURITY_HEADERS`], then the answer's own headers, which replace a default (its CSP,
/// `Referrer-Policy`, `Cache-Control`) rather than doubling it; `Set-Cookie` lines add up.
fn answer_header(
    status: http::StatusCode,
    content_type: &str,
    body_len: usize,
    own: &[(HeaderName, String)],
) -> Result<ResponseHeader> {
    let mut header = ResponseHeader::build(status, Some(12 + own.len()))?;
    if body_len > 0 {
        header.insert_header(CONTENT_TYPE, content_type)?;
    }
    header.insert_header(CONTENT_LENGTH, body_len.to_string())?;
    header.insert_header(CACHE_CONTROL, "no-store")?;
    for (name, value) in SECURITY_HEADERS {
        header.insert_header(HeaderName::from_static(name), *value)?;
    }
    for (name, value) in own {
        if name == http::header::SET_COOKIE {
            header.append_header(name.clone(), value.as_str())?;
        } else {
            header.insert_header(name.clone(), value.as_str())?;
        }
    }
    Ok(header)
}

/// The keep-alive an answer asks for: none once the server is `stopping`; otherwise on,
/// timed by the connection guard (`server.keepalive_timeout`).
pub fn keep_alive(stopping: bool) -> Option<u64> {
    if stopping { None } else { KEEP_ALIVE }
}

/// For a proxied answer: `Connection: close` once the server is stopping (Pingora decides
/// that only when a request starts, so a request in flight at SIGTERM would keep it).
pub fn close_when_stopping(session: &mut Session) {
    if session.is_process_shutting_down() {
        session.set_keepalive(None);
    }
}

/// Sends `response` and ends the exchange, keeping the connection reusable.
pub async fn write_local_response(session: &mut Session, response: &Reply) -> Result<()> {
    let stopping = session.is_process_shutting_down();
    session.set_keepalive(keep_alive(stopping));
    write_response(session, response).await
}

/// `reply` as a whole HTTP/1.1 answer on the wire, with `Connection: close`: for a connection
/// no HTTP session can be made of (a request head over the limit).
pub fn closing_answer_bytes(reply: &Reply) -> Bytes {
    let body = reply.body_bytes();
    let mut out = BytesMut::with_capacity(512 + body.len());
    let reason = reply.status.canonical_reason().unwrap_or("");
    out.put_slice(format!("HTTP/1.1 {} {reason}\r\n", reply.status.as_u16()).as_bytes());
    if let Ok(header) = local_response_header(reply, body.len()) {
        for (name, value) in header.headers.iter() {
            out.put_slice(name.as_str().as_bytes());
            out.put_slice(b": ");
            out.put_slice(value.as_bytes());
            out.put_slice(b"\r\n");
        }
    }
    out.put_slice(b"date: ");
    out.put_slice(pingora::protocols::http::date::get_cached_date().as_bytes());
    out.put_slice(b"\r\nconnection: close\r\n\r\n");
    out.put_slice(&body);
    out.freeze()
}

/// Sends `response` with `Connection: close`: for failures after which the connection
/// cannot be reused, so clients do not pool a socket that is about to close.
pub async fn write_closing_response(session: &mut Session, response: &Reply) -> Result<()> {
    session.set_keepalive(None);
    write_response(session, response).await
}

async fn write_response(session: &mut Session, response: &Reply) -> Result<()> {
    let body = response.body_bytes();
    let header = local_response_header(response, body.len())?;
    write_answer(session, header, body).await
}

/// Writes `header` and `body` (no body to a `HEAD`).
async fn write_answer(session: &mut Session, header: ResponseHeader, body: Bytes) -> Result<()> {
    let send_body = session.req_header().method != http::Method::HEAD && !body.is_empty();
    session
        .write_response_header(Box::new(header), !send_body)
        .await?;
    if send_body {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Sends a portal page (HTML or its stylesheet) with the security headers, the page's own
/// headers replacing the defaults (its CSP, `Referrer-Policy`, `Cache-Control`), keeping the
/// connection reusable.
pub async fn write_page(session: &mut Session, page: &Page) -> Result<()> {
    let stopping = session.is_process_shutting_down();
    session.set_keepalive(keep_alive(stopping));
    write_page_now(session, page).await
}

/// Sends a page with `Connection: close`, as [`write_closing_response`] sends a reply.
pub async fn write_closing_page(session: &mut Session, page: &Page) -> Result<()> {
    session.set_keepalive(None);
    write_page_now(session, page).await
}

async fn write_page_now(session: &mut Session, page: &Page) -> Result<()> {
    let header = answer_header(
        page.status,
        page.content_type,
        page.body.len(),
        &page.headers,
    )?;
    write_answer(session, header, page.body.clone()).await
}
