//! Every message a person or a client reads is told in sentences (ARCHITECTURE.md,
//! "Messages"): the error texts of every built-in catalogue, a field's message in every
//! language, and every `message` of what the gateway answers to a table of refused
//! requests — bad JSON, missing and mistyped fields, a bad address, a weak password, an
//! unknown query key, wrong credentials, 401, 404, 405, 413, 415, 429 — on each backend pair.

use portcullis::i18n::Catalogs;
use portcullis::reply::{FIELD_LABELS, FieldError, field_label, sentence_problem};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::app::{PASSWORD, TestApp, backends};

/// The built-in catalogues, as the repository keeps them.
const CATALOGUES: [(&str, &str); 2] = [
    ("en", include_str!("../../config/portal/locales/en.toml")),
    ("ru", include_str!("../../config/portal/locales/ru.toml")),
];

/// The page texts that explain a refusal outside the `error_*` names: what the portal
/// shows for a mailed link, a passkey, an unproven address or an administrator's refusal.
const OTHER_ERROR_KEYS: &[&str] = &[
    "link_invalid_text",
    "invitation_invalid_text",
    "invitation_taken_text",
    "passkey_failed",
    "two_factor_needs_verified_email",
    "passkeys_need_verified_email",
    "admin_forbidden_text",
    "admin_no_account_text",
    "admin_no_second_factor_text",
];

/// Whether a catalogue key names an error text: `error_*` and `admin_error_*` (not the
/// titles), `federation_*` (not its title), a refusal's `*_text`, and [`OTHER_ERROR_KEYS`].
fn is_error_key(key: &str) -> bool {
    let titled = key.ends_with("_title") || key.ends_with("_title_prefix");
    let error_family = ["error_", "admin_error_", "federation_"]
        .iter()
        .any(|prefix| key.starts_with(prefix));
    (error_family && !titled)
        || (key.starts_with("refusal_") && key.ends_with("_text"))
        || OTHER_ERROR_KEYS.contains(&key)
}

#[test]
fn every_error_text_of_every_catalogue_is_a_sentence() {
    let mut found = Vec::new();
    let mut checked = 0;
    for (code, text) in CATALOGUES {
        let table: toml::Table = toml::from_str(text).expect("the catalogue parses");
        for (key, value) in &table {
            let Some(text) = value.as_str().filter(|_| is_error_key(key)) else {
                continue;
            };
            checked += 1;
            if let Some(why) = sentence_problem(text) {
                found.push(format!("{code}.toml {key} {why}: {text:?}"));
            }
        }
        let messages = table.get("messages").and_then(toml::Value::as_table);
        for (english, value) in messages.into_iter().flatten() {
            let text = value.as_str().unwrap_or_default();
            let text = text.replace("{field}", "Имя").replace("{n}", "12");
            checked += 1;
            if let Some(why) = sentence_problem(&text) {
                found.push(format!(
                    "{code}.toml [messages] {english:?} {why}: {text:?}"
                ));
            }
        }
    }
    assert!(found.is_empty(), "not sentences:\n{}", found.join("\n"));
    assert!(
        checked > 100,
        "only {checked} texts checked: is the naming rule still right?"
    );
}

/// A field's message reaches a page in the page's language, as a sentence naming the
/// field in that language: the patterns of `[messages]` and the names of `[fields]`.
#[test]
fn a_field_s_message_is_a_sentence_in_every_language() {
    let catalogs = Catalogs::load(None, "en").expect("the catalogues load");
    let predicates = [
        "is required",
        "must be a string",
        "must not be empty",
        "must be at most 100 characters",
        "must not contain control characters",
    ];
    let mut found = Vec::new();
    for catalog in catalogs.all() {
        for (field, _) in FIELD_LABELS {
            for predicate in predicates {
                let english = FieldError::named(field, predicate).message;
                let label = field_label(field);
                let shown = catalog.field_message(field, &label, &english);
                if let Some(why) = sentence_problem(&shown) {
                    found.push(format!("{} {field} {why}: {shown:?}", catalog.code));
                }
                if catalog.code != "en" && shown == english {
                    found.push(format!("{} does not translate {english:?}", catalog.code));
                }
                if catalog.code != "en" && shown.contains(label.as_ref()) {
                    found.push(format!(
                        "{} names {field} in English: {shown:?}",
                        catalog.code
                    ));
                }
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// One request of the table and what it must be answered.
struct Case {
    what: &'static str,
    method: Method,
    path: &'static str,
    /// The body as sent, and its `Content-Type`.
    body: Option<(&'static str, String)>,
    bearer: Option<String>,
    status: StatusCode,
    code: &'static str,
    /// `(field, message)` pairs the answer's `errors` must hold, exactly.
    fields: &'static [(&'static str, &'static str)],
}

impl Case {
    fn new(what: &'static str, method: Method, path: &'static str) -> Self {
        Self {
            what,
            method,
            path,
            body: None,
            bearer: None,
            status: StatusCode::OK,
            code: "",
            fields: &[],
        }
    }

    fn json(mut self, body: Value) -> Self {
        self.body = Some(("application/json", body.to_string()));
        self
    }

    fn raw(mut self, content_type: &'static str, body: impl Into<String>) -> Self {
        self.body = Some((content_type, body.into()));
        self
    }

    fn bearer(mut self, token: &str) -> Self {
        self.bearer = Some(token.to_owned());
        self
    }

    fn refused(mut self, status: StatusCode, code: &'static str) -> Self {
        self.status = status;
        self.code = code;
        self
    }

    fn naming(mut self, fields: &'static [(&'static str, &'static str)]) -> Self {
        self.fields = fields;
        self
    }
}

/// What is wrong with one answer of the table, if anything.
fn judge(case: &Case, status: StatusCode, body: &Value) -> Vec<String> {
    let what = case.what;
    let mut found = Vec::new();
    if status != case.status || body["code"].as_str().unwrap_or("") != case.code {
        found.push(format!("{what}: answered {status} {body}"));
    }
    let mut messages = vec![("message".to_owned(), body["message"].clone())];
    let errors = body["errors"].as_array().cloned().unwrap_or_default();
    for error in &errors {
        let field = error["field"].as_str().unwrap_or("?");
        messages.push((format!("errors[{field}]"), error["message"].clone()));
    }
    for (at, message) in messages {
        match message.as_str().map(sentence_problem) {
            Some(None) => {}
            Some(Some(why)) => found.push(format!("{what}: {at} {why}: {message}")),
            None => found.push(format!("{what}: {at} is no text: {body}")),
        }
    }
    for (field, message) in case.fields {
        let named = errors
            .iter()
            .any(|e| e["field"] == *field && e["message"] == *message);
        if !named {
            found.push(format!("{what}: no {field:?} told {message:?}: {body}"));
        }
    }
    found
}

/// The table: each way a request is refused (and two that succeed, whose messages are
/// held to the same rule), `token` a signed-in account's access token.
fn table(token: &str) -> Vec<Case> {
    use Method as M;
    use StatusCode as S;
    let registration = |email: &str, password: &str| json!({"email": email, "password": password, "first_name": "Ada", "last_name": "Lovelace"});
    vec![
        Case::new("a registration", M::POST, "/api/auth/register")
            .json(registration("new@example.com", PASSWORD))
            .refused(S::CREATED, ""),
        Case::new("bad JSON", M::POST, "/api/auth/login")
            .raw("application/json", "{\"email\":")
            .refused(S::BAD_REQUEST, "invalid_json"),
        Case::new("JSON that is no object", M::POST, "/api/auth/login")
            .raw("application/json", "[1]")
            .refused(S::BAD_REQUEST, "invalid_json"),
        Case::new("a body that is not JSON", M::POST, "/api/auth/login")
            .raw("text/plain", "email=a")
            .refused(S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        Case::new("a body too large", M::POST, "/api/auth/login")
            .raw("application/json", format!("\"{}\"", "x".repeat(4096)))
            .refused(S::PAYLOAD_TOO_LARGE, "payload_too_large"),
        Case::new("missing fields", M::POST, "/api/auth/login")
            .json(json!({}))
            .refused(S::BAD_REQUEST, "validation_error")
            .naming(&[
                ("email", "Email is required."),
                ("password", "Password is required."),
            ]),
        Case::new("fields of the wrong type", M::POST, "/api/auth/register")
            .json(json!({"email": 5, "password": true, "first_name": [], "last_name": {}}))
            .refused(S::BAD_REQUEST, "validation_error")
            .naming(&[
                ("email", "Email must be a string."),
                ("first_name", "First name must be a string."),
            ]),
        Case::new("a bad address and names", M::POST, "/api/auth/register")
            .json(json!({"email": "not-an-email", "password": PASSWORD, "first_name": " ",
                "last_name": "a\u{200B}b"}))
            .refused(S::BAD_REQUEST, "validation_error")
            .naming(&[
                ("email", "Email must be a valid address such as name@example.com."),
                ("first_name", "First name is required."),
                (
                    "last_name",
                    "Last name must not contain invisible or direction-changing characters.",
                ),
            ]),
        Case::new("a short, common password", M::POST, "/api/auth/register")
            .json(registration("weak@example.com", "password1"))
            .refused(S::BAD_REQUEST, "validation_error"),
        Case::new("a taken address", M::POST, "/api/auth/register")
            .json(registration("new@example.com", PASSWORD))
            .refused(S::CONFLICT, "email_taken"),
        Case::new("wrong credentials", M::POST, "/api/auth/login")
            .json(json!({"email": "nobody@example.com", "password": "Wrong-Password-1"}))
            .refused(S::UNAUTHORIZED, "invalid_credentials"),
        Case::new("a bad refresh token", M::POST, "/api/auth/refresh-token")
            .json(json!({"refresh_token": "not-a-token"}))
            .refused(S::UNAUTHORIZED, "invalid_token"),
        Case::new("a bad mailed link", M::POST, "/api/auth/verify-email")
            .json(json!({"token": "not-a-token"}))
            .refused(S::BAD_REQUEST, "invalid_token"),
        Case::new("no credentials", M::GET, "/api/auth/profile")
            .refused(S::UNAUTHORIZED, "authentication_required"),
        Case::new("a bad access token", M::GET, "/api/auth/profile")
            .bearer("not.a.token")
            .refused(S::UNAUTHORIZED, "invalid_token"),
        Case::new("a wrong current password", M::POST, "/api/auth/change-password")
            .bearer(token)
            .json(json!({"current_password": "Wrong-Password-1", "new_password": "correct horse battery staple"}))
            .refused(S::BAD_REQUEST, "validation_error")
            .naming(&[("current_password", "Current password is incorrect.")]),
        Case::new("an emptied name", M::PATCH, "/api/auth/profile")
            .bearer(token)
            .json(json!({"first_name": "  "}))
            .refused(S::BAD_REQUEST, "validation_error")
            .naming(&[("first_name", "First name must not be empty.")]),
        Case::new("no such session", M::DELETE, "/api/auth/sessions/0123456789abcdef0123456789abcdef")
            .bearer(token)
            .refused(S::NOT_FOUND, "session_not_found"),
        Case::new("a profile", M::GET, "/api/auth/profile")
            .bearer(token)
            .refused(S::OK, ""),
        Case::new("an unknown query key", M::GET, "/api/auth/verify?two_factor=true&shoe_size=9")
            .refused(S::BAD_REQUEST, "validation_error"),
        Case::new("a repeated query key", M::GET, "/api/auth/verify?verified=true&verified=true")
            .refused(S::BAD_REQUEST, "validation_error")
            .naming(&[("verified", "Verified is given more than once.")]),
        Case::new("an unknown path", M::GET, "/api/auth/no-such-endpoint")
            .refused(S::NOT_FOUND, "not_found"),
        Case::new("a method the path does not take", M::PUT, "/api/auth/login")
            .json(json!({}))
            .refused(S::METHOD_NOT_ALLOWED, "method_not_allowed"),
        Case::new("a NUL in the path", M::GET, "/api/auth/pro%00file")
            .refused(S::BAD_REQUEST, "invalid_path"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_of_the_api_is_told_in_sentences() {
    for backend in backends() {
        let app = TestApp::spawn_with(backend, "", |c| {
            c.server.max_body_bytes = 1024;
            c.rate_limits.password_reset = Some("2/1h".parse().expect("a rate"));
        })
        .await;
        app.register("signed-in@example.com").await;
        let token = app.login("signed-in@example.com").await.access;
        let mut found = Vec::new();
        for case in table(&token) {
            let mut request = app.http.request(case.method.clone(), app.url(case.path));
            if let Some((content_type, body)) = &case.body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, *content_type)
                    .body(body.clone());
            }
            if let Some(token) = &case.bearer {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.expect("the request is answered");
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            found.extend(judge(&case, status, &body));
        }
        // The rate limit, last: the third reset request from this address is refused.
        let reset = json!({"email": "nobody@example.com"});
        let mut limited = None;
        for _ in 0..3 {
            limited = Some(
                app.post("/api/auth/request-password-reset", reset.clone())
                    .await,
            );
        }
        let limited = limited.expect("three requests");
        let case = Case::new(
            "a rate limit",
            Method::POST,
            "/api/auth/request-password-reset",
        )
        .refused(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        found.extend(judge(&case, limited.status, &limited.body));
        assert!(found.is_empty(), "{backend:?}:\n{}", found.join("\n"));
    }
}
