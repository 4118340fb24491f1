//! The response envelope every locally answered request uses.
//!
//! `{"success": true, "message": …, "data": …}` or
//! `{"success": false, "message": …, "code": …, "errors": [{"field": …, "message": …}]}`.

use http::StatusCode;
use serde::Serialize;
use serde_json::Value;

/// One field-level validation problem.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
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

/// A locally generated answer: status, extra headers and a JSON body.
///
/// Handlers build these; the gateway turns them into bytes on the wire. No Pingora types here.
#[derive(Clone, Debug)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub headers: Vec<(http::HeaderName, String)>,
    pub body: Value,
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

impl ApiResponse {
    /// A success envelope with optional data.
    pub fn ok(status: StatusCode, message: &str, data: Option<Value>) -> Self {
        Self::raw(
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
        Self::raw(
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
        Self::raw(
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

    /// Any JSON body (health, JWKS) that is not an envelope.
    pub fn raw(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body,
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: http::HeaderName, value: impl Into<String>) -> Self {
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

    /// The serialized body.
    pub fn body_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.body).unwrap_or_else(|_| b"{}".to_vec())
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
        let r = ApiResponse::error(StatusCode::NOT_FOUND, "not_found", "Not found");
        assert_eq!(
            r.body,
            json!({"success": false, "message": "Not found", "code": "not_found"})
        );
    }

    #[test]
    fn validation_lists_fields() {
        let r = ApiResponse::validation(&[FieldError::new("email", "is required")]);
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.body["errors"][0]["field"], "email");
        assert_eq!(r.body["code"], "validation_error");
    }

    #[test]
    fn success_envelope_carries_data() {
        let r = ApiResponse::ok(StatusCode::OK, "ok", Some(json!({"a": 1})));
        assert_eq!(
            r.body,
            json!({"success": true, "message": "ok", "data": {"a": 1}})
        );
    }
}
