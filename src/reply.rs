//! The answer every locally answered request gets: status, extra headers and a body.
//!
//! Envelope bodies are `{"success": true, "message": …, "data": …}` or
//! `{"success": false, "message": …, "code": …, "errors": [{"field": …, "message": …}]}`
//! (DESIGN section 3). Fixed documents (JWKS, OpenAPI) are serialised once and shared.
//!
//! Every `message` is one or more complete sentences (ARCHITECTURE.md, "Messages"):
//! [`sentence_problem`] is that rule, and a field's message names the field in plain words
//! ([`field_label`], [`FieldError::named`]).
//!
//! Invariant: this module imports nothing from the crate, so every floor may answer with it.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderName, StatusCode};
use serde::Serialize;
use serde_json::Value;

/// One field-level validation problem.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FieldError {
    /// The request field at fault, as named in the request body (e.g. `email`).
    pub field: String,
    /// What is wrong with it, as an English sentence naming the field in plain words
    /// (e.g. `First name is required.`).
    pub message: String,
}

impl FieldError {
    /// A problem with `field`, told by `message`: a whole sentence that names the field.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A problem with `field`, told as the sentence "its label, then `predicate`":
    /// `named("first_name", "is required")` says `First name is required.`
    pub fn named(field: &str, predicate: &str) -> Self {
        Self::new(field, format!("{} {predicate}.", field_label(field)))
    }

    /// `field` is missing or empty.
    pub fn required(field: &str) -> Self {
        Self::named(field, "is required")
    }
}

/// The request fields messages name, with the plain words they are named by. A field not
/// listed is named by its machine name with spaces for `_` and a capital first letter.
pub const FIELD_LABELS: &[(&str, &str)] = &[
    ("email", "Email"),
    ("password", "Password"),
    ("new_password", "New password"),
    ("current_password", "Current password"),
    ("first_name", "First name"),
    ("last_name", "Last name"),
    ("token", "Token"),
    ("refresh_token", "Refresh token"),
    ("remember_me", "Remember me"),
    ("two_factor_code", "Two-factor code"),
    ("secret", "Secret"),
    ("name", "Name"),
    ("credential", "Credential"),
    ("ceremony_id", "Ceremony id"),
    ("role", "Role"),
    ("roles", "Roles"),
    ("q", "Search text"),
    ("page", "Page"),
    ("limit", "Limit"),
    ("before", "Before"),
    ("kind", "Kind"),
    ("since", "Since"),
    ("until", "Until"),
    ("subject", "Subject"),
    ("provider", "Provider"),
    ("two_factor", "Two-factor"),
    ("verified", "Verified"),
    ("max_auth_age", "Max auth age"),
];

/// A request field's name in plain words, as a message names it at the start of a
/// sentence (`first_name` is `First name`); [`FIELD_LABELS`], else the machine name with
/// spaces for `_` and a capital first letter.
pub fn field_label(field: &str) -> Cow<'static, str> {
    if let Some((_, label)) = FIELD_LABELS.iter().find(|(name, _)| *name == field) {
        return Cow::Borrowed(label);
    }
    let spaced = field.replace('_', " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => Cow::Owned(first.to_uppercase().chain(chars).collect()),
        None => Cow::Borrowed("This field"),
    }
}

/// Why `text` is not a message by the house rule, or `None` when it is one: one or more
/// complete sentences, the first letter a capital (or the text starting with a digit),
/// a full stop last, no backticks (nothing renders them), no doubled spaces or space
/// before punctuation, and in Cyrillic text quotes as «», never straight ones.
pub fn sentence_problem(text: &str) -> Option<&'static str> {
    let Some(first) = text.chars().next() else {
        return Some("is empty");
    };
    if text.trim() != text {
        return Some("has a space at its start or end");
    }
    if !(first.is_uppercase() || first.is_ascii_digit()) {
        return Some("does not start with a capital letter");
    }
    if !text.ends_with('.') || text.ends_with("..") {
        return Some("does not end with one full stop");
    }
    if text.contains('`') {
        return Some("has backticks");
    }
    if text.contains("  ") {
        return Some("has a doubled space");
    }
    if [" .", " ,", " ;", " :", " !", " ?"]
        .iter()
        .any(|p| text.contains(p))
    {
        return Some("has a space before punctuation");
    }
    let cyrillic = text.chars().any(|c| ('\u{0400}'..='\u{04FF}').contains(&c));
    if cyrillic && text.contains('"') {
        return Some("quotes with \" in Cyrillic text, not «»");
    }
    None
}

/// Whether `text` is a message by the house rule ([`sentence_problem`]).
pub fn is_sentence(text: &str) -> bool {
    sentence_problem(text).is_none()
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
                message: "One or more fields are not valid.",
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
            &format!("The {what} is temporarily unavailable. Try again shortly."),
        )
        .with_header(http::header::RETRY_AFTER, "5")
    }

    /// 500: a bug. Logged with the cause; the client learns nothing more.
    pub fn internal(context: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, context, "internal error");
        Self::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Something went wrong on the server. Try again later.",
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
        Self::error(
            StatusCode::NOT_FOUND,
            "not_found",
            "Nothing is found at this path.",
        )
    }

    /// 405 with the methods the path does accept.
    pub fn method_not_allowed(allow: &str) -> Self {
        Self::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "This path does not take this method; the Allow header lists those it takes.",
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
        let r = Reply::not_found();
        assert_eq!(
            *r.body_json(),
            json!({"success": false, "message": "Nothing is found at this path.", "code": "not_found"})
        );
    }

    #[test]
    fn validation_lists_fields() {
        let r = Reply::validation(&[FieldError::required("email")]);
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.body_json()["errors"][0]["field"], "email");
        assert_eq!(r.body_json()["errors"][0]["message"], "Email is required.");
        assert_eq!(r.body_json()["code"], "validation_error");
    }

    #[test]
    fn a_field_is_named_in_plain_words() {
        assert_eq!(
            FieldError::named("first_name", "must not be empty").message,
            "First name must not be empty."
        );
        assert_eq!(field_label("two_factor_code"), "Two-factor code");
        assert_eq!(field_label("q"), "Search text");
        assert_eq!(field_label("display_name"), "Display name");
        assert_eq!(field_label(""), "This field");
    }

    #[test]
    fn the_fixed_answers_are_sentences() {
        let replies = [
            Reply::validation(&[]),
            Reply::unavailable("session store"),
            Reply::not_found(),
            Reply::method_not_allowed("GET"),
            Reply::internal("a test", &"nothing"),
        ];
        for r in replies {
            let message = r.body_json()["message"].as_str().unwrap_or_default();
            assert_eq!(sentence_problem(message), None, "{message:?}");
        }
        for (field, _) in FIELD_LABELS {
            let message = FieldError::required(field).message;
            assert_eq!(sentence_problem(&message), None, "{message:?}");
        }
    }

    #[test]
    fn a_sentence_is_told_from_a_fragment() {
        let fine = [
            "Email must be a valid address such as name@example.com.",
            "2 sessions were ended.",
            "Заполните поле «Имя».",
            "Repeats like \"aaa\" are easy to guess.",
        ];
        for text in fine {
            assert_eq!(sentence_problem(text), None, "{text:?}");
        }
        let refused = [
            ("", "is empty"),
            ("is required", "does not start with a capital letter"),
            ("Invalid credentials", "does not end with one full stop"),
            ("Wait..", "does not end with one full stop"),
            (" Padded.", "has a space at its start or end"),
            ("Send ``token``.", "has backticks"),
            ("Two  spaces.", "has a doubled space"),
            ("A space , here.", "has a space before punctuation"),
            (
                "Поле \"Имя\" пусто.",
                "quotes with \" in Cyrillic text, not «»",
            ),
        ];
        for (text, why) in refused {
            assert_eq!(sentence_problem(text), Some(why), "{text:?}");
            assert!(!is_sentence(text));
        }
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
