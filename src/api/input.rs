//! Reading JSON request bodies into typed fields, collecting every problem as a field error.
//!
//! Bodies are parsed into a JSON object first and fields are taken one by one, so that a
//! wrong type in one field gives a `{"field": …, "message": …}` entry rather than a generic 400.

use http::StatusCode;
use serde_json::{Map, Value};

use super::{ApiRequest, FieldError, Reply};
use crate::accounts::fields::FieldErrors;

/// The fields of a JSON object body, with the errors found while reading them.
pub struct Fields {
    map: Map<String, Value>,
    errors: Vec<FieldError>,
}

impl Fields {
    /// Parses the request body as a JSON object. An empty body counts as `{}`.
    pub fn from_request(request: &ApiRequest) -> Result<Self, Reply> {
        if request.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self {
                map: Map::new(),
                errors: Vec::new(),
            });
        }
        if !is_json_content_type(request) {
            return Err(Reply::error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "The request body must be JSON, sent as Content-Type: application/json.",
            ));
        }
        match serde_json::from_slice::<Value>(&request.body) {
            Ok(Value::Object(map)) => Ok(Self {
                map,
                errors: Vec::new(),
            }),
            Ok(_) => Err(Reply::error(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "The request body must be a JSON object.",
            )),
            Err(_) => Err(Reply::error(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "The request body is not valid JSON.",
            )),
        }
    }

    /// The fields of an object already in hand: a portal form's values, read the way the
    /// API reads a body, so both ways in name the same problems.
    pub fn of_object(map: Map<String, Value>) -> Self {
        Self {
            map,
            errors: Vec::new(),
        }
    }

    /// A required string field, trimmed unless `raw` (passwords keep their spaces).
    fn string(&mut self, name: &str, required: bool, raw: bool) -> Option<String> {
        match self.map.get(name) {
            None | Some(Value::Null) => {
                if required {
                    self.errors.push(FieldError::required(name));
                }
                None
            }
            Some(Value::String(s)) => {
                let s = if raw { s.clone() } else { s.trim().to_string() };
                if required && s.is_empty() {
                    self.errors.push(FieldError::required(name));
                    return None;
                }
                Some(s)
            }
            Some(_) => {
                self.errors
                    .push(FieldError::named(name, "must be a string"));
                None
            }
        }
    }

    /// A required, trimmed string.
    pub fn required(&mut self, name: &str) -> Option<String> {
        self.string(name, true, false)
    }

    /// A required string kept exactly as sent (for passwords).
    pub fn required_raw(&mut self, name: &str) -> Option<String> {
        self.string(name, true, true)
    }

    /// An optional string kept exactly as sent (for passwords).
    pub fn optional_raw(&mut self, name: &str) -> Option<String> {
        self.string(name, false, true)
    }

    /// An optional, trimmed string.
    pub fn optional(&mut self, name: &str) -> Option<String> {
        self.string(name, false, false)
    }

    /// A string field as sent, for the account core's field rules (which trim, require
    /// and parse it): `""` when absent or null; a value that is no string is named here
    /// and read as `""` (the rules do not name that field again, see [`found`](Self::found)).
    pub fn text(&mut self, name: &str) -> String {
        self.optional_text(name).unwrap_or_default()
    }

    /// As [`text`](Self::text), but `None` when absent or null (a field left as it is).
    pub fn optional_text(&mut self, name: &str) -> Option<String> {
        match self.map.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.errors
                    .push(FieldError::named(name, "must be a string"));
                Some(String::new())
            }
        }
    }

    /// The errors found so far, for the account core's field rules to go on from
    /// (`Registration::parse_after` and its kin).
    pub fn found(self) -> FieldErrors {
        let mut found = FieldErrors::default();
        for e in self.errors {
            found.reject(&e.field, e.message);
        }
        found
    }

    /// An optional list of strings (role names), each trimmed; `None` when absent or null.
    /// A value that is no array of strings is named here.
    pub fn string_list(&mut self, name: &str) -> Option<Vec<String>> {
        match self.map.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => {
                let strings: Option<Vec<String>> = items
                    .iter()
                    .map(|item| item.as_str().map(|s| s.trim().to_owned()))
                    .collect();
                if strings.is_none() {
                    self.errors
                        .push(FieldError::named(name, "must be an array of strings"));
                }
                strings
            }
            Some(_) => {
                self.errors
                    .push(FieldError::named(name, "must be an array of strings"));
                None
            }
        }
    }

    /// An optional boolean, `false` when absent.
    pub fn flag(&mut self, name: &str) -> bool {
        match self.map.get(name) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                self.errors
                    .push(FieldError::named(name, "must be true or false"));
                false
            }
        }
    }

    /// Records a problem found while validating a field's value: `message` is a whole
    /// sentence naming the field ([`FieldError::named`] builds one).
    pub fn reject(&mut self, name: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(name, message));
    }

    /// Records that `name` `predicate` (`is required`), told as a sentence naming the field
    /// ([`FieldError::named`]).
    pub fn reject_that(&mut self, name: &str, predicate: &str) {
        self.errors.push(FieldError::named(name, predicate));
    }

    /// `Ok(())` when no field failed, else the 400 listing them all.
    pub fn finish(self) -> Result<(), Reply> {
        self.finish_with(Some(()))
    }

    /// The typed values when no field failed, else every failure (for the account core's
    /// `AccountError::Invalid`). `values` is `None` only when a failure was recorded.
    pub fn into_values<T>(self, values: Option<T>) -> Result<T, Vec<FieldError>> {
        match values {
            Some(values) if self.errors.is_empty() => Ok(values),
            _ => Err(self.errors),
        }
    }

    /// The form's typed values when no field failed, else the 400 listing every failure.
    /// `values` is `None` only when an accessor or [`reject`](Self::reject) recorded why,
    /// so the 400 always names the fields.
    pub fn finish_with<T>(self, values: Option<T>) -> Result<T, Reply> {
        match values {
            Some(values) if self.errors.is_empty() => Ok(values),
            _ => Err(Reply::validation(&self.errors)),
        }
    }
}

/// The most characters of an unknown query key a 400 repeats back.
const MAX_ECHOED_KEY_CHARS: usize = 32;

/// The parameters of a request's query string (`application/x-www-form-urlencoded`: keys
/// and values percent-decoded, keys compared exactly), held to a list of known keys, each
/// at most once. An empty value counts as not given.
#[derive(Debug, Default)]
pub struct Query {
    values: Vec<(&'static str, String)>,
}

impl Query {
    /// Reads `request`'s query, taking only the `known` keys; the 400 names every unknown
    /// key (cut to 32 characters) and every key given twice, never ignoring one.
    pub fn parse(request: &ApiRequest, known: &[&'static str]) -> Result<Self, Reply> {
        let mut query = Self::default();
        let mut errors = Vec::new();
        let text = request.query.as_deref().unwrap_or("");
        for (key, value) in url::form_urlencoded::parse(text.as_bytes()) {
            let Some(name) = known.iter().copied().find(|k| *k == key) else {
                errors.push(FieldError::new(echoed(&key), unknown_key(known)));
                continue;
            };
            if query.values.iter().any(|(k, _)| *k == name) {
                errors.push(FieldError::named(name, "is given more than once"));
                continue;
            }
            if !value.is_empty() {
                query.values.push((name, value.into_owned()));
            }
        }
        if errors.is_empty() {
            Ok(query)
        } else {
            Err(Reply::validation(&errors))
        }
    }

    /// The value of `key`, when given and not empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The message of an unknown query key: what the endpoint takes instead.
fn unknown_key(known: &[&str]) -> String {
    match known {
        [] => "This endpoint takes no query parameters.".to_owned(),
        [one] => format!("This endpoint takes only the query parameter {one}."),
        _ => format!(
            "This endpoint takes only the query parameters {}.",
            listed(known)
        ),
    }
}

/// Names as a sentence lists them: `a`, `a and b`, `a, b and c`.
pub fn listed(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// An unknown key as a 400 may repeat it: at most [`MAX_ECHOED_KEY_CHARS`] characters.
fn echoed(key: &str) -> String {
    let mut chars = key.chars();
    let mut out: String = chars.by_ref().take(MAX_ECHOED_KEY_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// The JSON object body of a request (empty object for an empty body).
pub(super) fn body_object(request: &ApiRequest) -> serde_json::Map<String, Value> {
    serde_json::from_slice::<Value>(&request.body)
        .ok()
        .and_then(|v| match v {
            Value::Object(map) => Some(map),
            _ => None,
        })
        .unwrap_or_default()
}

fn is_json_content_type(request: &ApiRequest) -> bool {
    request
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let mime = v
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue, Method};

    fn request(content_type: Option<&str>, body: &str) -> ApiRequest {
        let mut headers = HeaderMap::new();
        if let Some(ct) = content_type {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_str(ct).unwrap(),
            );
        }
        ApiRequest {
            method: Method::POST,
            path: "/api/auth/x".into(),
            query: None,
            headers,
            body: Bytes::from(body.to_string()),
            client_ip: "127.0.0.1".parse().unwrap(),
            user_agent: String::new(),
            original: None,
        }
    }

    #[test]
    fn wrong_content_type_is_415() {
        let err = Fields::from_request(&request(Some("text/plain"), "{}"))
            .err()
            .unwrap();
        assert_eq!(err.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let err = Fields::from_request(&request(None, "{}")).err().unwrap();
        assert_eq!(err.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn malformed_or_non_object_json_is_400() {
        for body in ["{", "[1]", "\"x\"", "{\"a\":}"] {
            let err = Fields::from_request(&request(Some("application/json"), body))
                .err()
                .unwrap();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(err.body_json()["code"], "invalid_json");
        }
    }

    #[test]
    fn collects_every_field_error() {
        let req = request(
            Some("application/json; charset=utf-8"),
            r#"{"email": 5, "remember_me": "yes"}"#,
        );
        let mut f = Fields::from_request(&req).unwrap();
        assert!(f.required("email").is_none());
        assert!(f.required_raw("password").is_none());
        assert!(!f.flag("remember_me"));
        let err = f.finish().err().unwrap();
        let fields: Vec<_> = err.body_json()["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(fields, ["email", "password", "remember_me"]);
    }

    #[test]
    fn a_query_names_unknown_and_repeated_keys() {
        let mut req = request(None, "");
        req.query = Some("search=a%20b&limit=&after=x%40y.z".into());
        let query = Query::parse(&req, &["search", "after", "limit"]).unwrap();
        assert_eq!(query.get("search"), Some("a b"));
        assert_eq!(query.get("after"), Some("x@y.z"));
        assert_eq!(query.get("limit"), None, "an empty value is no value");

        req.query = Some(format!("search=a&search=b&q=1&{}=2", "k".repeat(40)));
        let err = Query::parse(&req, &["search"]).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        let fields: Vec<_> = err.body_json()["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_string())
            .collect();
        let long = format!("{}…", "k".repeat(32));
        assert_eq!(fields, ["search", "q", long.as_str()]);
        let messages: Vec<_> = err.body_json()["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            messages,
            [
                "Search is given more than once.",
                "This endpoint takes only the query parameter search.",
                "This endpoint takes only the query parameter search.",
            ]
        );
        assert_eq!(listed(&["q", "page", "limit"]), "q, page and limit");
        assert_eq!(listed(&["q", "page"]), "q and page");
    }

    #[test]
    fn a_string_list_is_an_array_of_strings() {
        let req = request(
            Some("application/json"),
            r#"{"roles": [" ops ", "billing"], "bad": [1], "worse": "ops"}"#,
        );
        let mut f = Fields::from_request(&req).unwrap();
        assert_eq!(
            f.string_list("roles"),
            Some(vec!["ops".to_owned(), "billing".to_owned()])
        );
        assert_eq!(f.string_list("absent"), None);
        assert_eq!(f.string_list("bad"), None);
        assert_eq!(f.string_list("worse"), None);
        let err = f.finish().unwrap_err();
        assert_eq!(err.body_json()["errors"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn passwords_keep_their_spaces() {
        let req = request(
            Some("application/json"),
            r#"{"password": " a b ", "name": " n "}"#,
        );
        let mut f = Fields::from_request(&req).unwrap();
        assert_eq!(f.required_raw("password").as_deref(), Some(" a b "));
        assert_eq!(f.required("name").as_deref(), Some("n"));
    }
}
