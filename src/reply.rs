//! The answer every locally answered request gets: status, extra headers and a body.
//!
//! Envelope bodies are `{"success": true, "message": …, "data": …}` or
//! `{"success": false, "message": …, "code": …, "errors": [{"field": …, "message": …}]}`
//! (DESIGN section 3). Fixed documents (JWKS, OpenAPI) are serialised once and shared.
//!
//! Invariant: this module imports nothing from the crate, so every floor may answer with it.

use bytes::Bytes;
use http::{HeaderName, StatusCode};
use serde::Serialize;
use serde_json::Value;

/// One field-level validation problem.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FieldError {
    /// The request field at fault, as named in the request body (e.g. `email`).
    pub field: String,
    /// What is wrong with it, in English (e.g. `is required`).
    pub message: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The body of a [`Reply`].
#[derive(Clone, Debug)]
pub enum Body {
    /// No body (204 answers, preflights, redirects).
    Empty,
    /// A JSON value, serialised when sent; in-process callers (the portal) read its fields.
    Json(Value),
    /// A JSON document serialised once and shared by every answer (JWKS, OpenAPI).
    Encoded(Bytes),
}

/// A locally generated answer: status, extra headers and a JSON body.
///
/// Handlers build these; the gateway turns them into bytes on the wire. No Pingora types here.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The response status.
    pub status: StatusCode,
    /// Headers added to (or replacing) the security defaults, e.g. `Set-Cookie`, `Location`.
    pub headers: Vec<(HeaderName, String)>,
    /// The body; [`Body::Empty`] for none.
    pub body: Body,
}

#[derive(Serialize)]
struct Envelope<'a> {
    success: bool,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}

/// `null`, for bodies that are not JSON values.
static NULL: Value = Value::Null;

impl Reply {
    /// A success envelope with optional data.
    pub fn ok(status: StatusCode, message: &str, data: Option<Value>) -> Self {
        Self::json(
            status,
            envelope_json(&Envelope {
                success: true,
                message,
                data,
                code: None,
                errors: None,
            }),
        )
    }

    /// A failure envelope with a machine-readable `code`.
    pub fn error(status: StatusCode, code: &str, message: &str) -> Self {
        Self::json(
            status,
            envelope_json(&Envelope {
                success: false,
                message,
                data: None,
                code: Some(code),
                errors: None,
            }),
        )
    }

    /// A 400 `validation_error` listing every field that failed.
    pub fn validation(errors: &[FieldError]) -> Self {
        Self::json(
            StatusCode::BAD_REQUEST,
            envelope_json(&Envelope {
                success: false,
                message: "Validation failed",
                data: None,
                code: Some("validation_error"),
                errors: Some(errors),
            }),
        )
    }

    /// 503: a dependency is down (`what` names it). Never a 500 for that.
    pub fn unavailable(what: &str) -> Self {
        Self::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            &format!("The {what} is temporarily unavailable; try again shortly"),
        )
        .with_header(http::header::RETRY_AFTER, "5")
    }

    /// 500: a bug. Logged with the cause; the client learns nothing more.
    pub fn internal(context: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, context, "internal error");
        Self::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal error",
        )
    }

    /// Any JSON body (health) that is not an envelope.
    pub fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Body::Json(body),
        }
    }

    /// A JSON document serialised beforehand; cloning `Bytes` shares them.
    pub fn encoded(status: StatusCode, body: Bytes) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Body::Encoded(body),
        }
    }

    /// An answer without a body: a 204, or a redirect (add `Location`).
    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Body::Empty,
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// 404 for a path nothing serves.
    pub fn not_found() -> Self {
        Self::error(StatusCode::NOT_FOUND, "not_found", "Not found")
    }

    /// 405 with the methods the path does accept.
    pub fn method_not_allowed(allow: &str) -> Self {
        Self::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Method not allowed",
        )
        .with_header(http::header::ALLOW, allow)
    }

    /// The body as a JSON value, for in-process readers (`null` when empty or pre-encoded).
    pub fn body_json(&self) -> &Value {
        match &self.body {
            Body::Json(value) => value,
            Body::Empty | Body::Encoded(_) => &NULL,
        }
    }

    /// The bytes on the wire; empty for [`Body::Empty`] (and a JSON `null`).
    pub fn body_bytes(&self) -> Bytes {
        match &self.body {
            Body::Empty | Body::Json(Value::Null) => Bytes::new(),
            Body::Json(value) => serde_json::to_vec(value)
                .map(Bytes::from)
                .unwrap_or_else(|_| Bytes::from_static(b"{}")),
            Body::Encoded(bytes) => bytes.clone(),
        }
    }
}

fn envelope_json(envelope: &Envelope<'_>) -> Value {
    serde_json::to_value(envelope).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_envelope_shape() {
        let r = Reply::error(StatusCode::NOT_FOUND, "not_found", "Not found");
        assert_eq!(
            *r.body_json(),
            json!({"success": false, "message": "Not found", "code": "not_found"})
        );
    }

    #[test]
    fn validation_lists_fields() {
        let r = Reply::validation(&[FieldError::new("email", "is required")]);
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.body_json()["errors"][0]["field"], "email");
        assert_eq!(r.body_json()["code"], "validation_error");
    }

    #[test]
    fn success_envelope_carries_data() {
        let r = Reply::ok(StatusCode::OK, "ok", Some(json!({"a": 1})));
        assert_eq!(
            *r.body_json(),
            json!({"success": true, "message": "ok", "data": {"a": 1}})
        );
    }

    #[test]
    fn encoded_and_empty_bodies_go_out_as_they_are() {
        let r = Reply::encoded(StatusCode::OK, Bytes::from_static(b"{\"keys\":[]}"));
        assert_eq!(&r.body_bytes()[..], b"{\"keys\":[]}");
        assert!(Reply::empty(StatusCode::NO_CONTENT).body_bytes().is_empty());
    }
}
