//! The OpenAPI 3.1 description of the account API, kept in `openapi/openapi.json` and served
//! at `GET /api/auth/openapi.json`.
//!
//! The file is embedded at build time, so the document a running gateway serves is always the
//! one its code was built (and tested) against.

use std::sync::LazyLock;

use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;

use crate::reply::Reply;

/// The document's text, as kept in the repository.
pub const DOCUMENT: &str = include_str!("../../openapi/openapi.json");

/// The document as served: parsed and serialised once (compact), shared by every answer.
static SERVED: LazyLock<Bytes> = LazyLock::new(|| {
    serde_json::from_str::<Value>(DOCUMENT)
        .and_then(|doc| serde_json::to_vec(&doc))
        .map(Bytes::from)
        .unwrap_or_default()
});

/// `GET /api/auth/openapi.json`: the document, cacheable like the JWKS.
pub fn response() -> Reply {
    Reply::encoded(StatusCode::OK, SERVED.clone())
        .with_header(http::header::CACHE_CONTROL, "public, max-age=300")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_document_parses_as_openapi_3_1() {
        let doc: Value = serde_json::from_str(DOCUMENT).expect("openapi.json is valid JSON");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
        let served: Value = serde_json::from_slice(&response().body_bytes()).unwrap();
        assert_eq!(served, doc);
    }
}
