//! The OpenAPI document and the gateway agree: every documented operation is served, every
//! served endpoint is documented, and the served document is the one in the repository.

use std::collections::BTreeSet;

use crate::support::app::{Backend, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The document as kept in the repository.
const DOCUMENT: &str = include_str!("../../openapi/openapi.json");
/// A well-formed session id that belongs to nobody.
const SAMPLE_ID: &str = "0123456789abcdef0123456789abcdef";

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("openapi/openapi.json is JSON")
}

/// Every `(METHOD, path template)` the document describes.
fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "head", "post", "put", "patch", "delete", "options"]
                .contains(&method.as_str())
            {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// A template with every `{parameter}` filled in.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') && segment.ends_with('}') {
                SAMPLE_ID
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The path templates of the account API's endpoint table.
fn route_table_paths() -> BTreeSet<String> {
    portcullis::api::endpoints::ENDPOINTS
        .iter()
        .map(|e| e.path.to_string())
        .collect()
}

#[test]
fn every_reference_resolves_and_every_operation_answers_something() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
    fn walk(doc: &Value, node: &Value, at: &str) {
        match node {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    let pointer = target
                        .strip_prefix('#')
                        .unwrap_or_else(|| panic!("{at}: external $ref {target}"));
                    assert!(
                        doc.pointer(pointer).is_some(),
                        "{at}: $ref {target} resolves to nothing"
                    );
                }
                for (k, v) in map {
                    walk(doc, v, &format!("{at}/{k}"));
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(doc, v, &format!("{at}/{i}"));
                }
            }
            _ => {}
        }
    }
    walk(&doc, &doc, "#");
    for (method, path) in documented_operations(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{method} {path} documents no success"
        );
        // Every /api/auth/* endpoint except forward-auth, and every /api/admin/* endpoint,
        // counts against the global limit.
        let limited = (path.starts_with("/api/auth/") && path != "/api/auth/verify")
            || path.starts_with("/api/admin/");
        assert_eq!(
            responses.contains_key("429"),
            limited,
            "{method} {path}: 429 documented iff the endpoint is rate limited"
        );
        assert!(
            op["operationId"].is_string(),
            "{method} {path} has an operationId"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn served_document_is_the_repository_file() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    let r = app
        .http
        .get(app.url("/api/auth/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()[reqwest::header::CONTENT_TYPE],
        "application/json"
    );
    let served: Value = r.json().await.unwrap();
    assert_eq!(served, document());

    let head = app
        .http
        .head(app.url("/api/auth/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    let wrong = app
        .call(
            Method::POST,
            "/api/auth/openapi.json",
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.headers["allow"], "GET, HEAD");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_operation_is_served() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    let doc = document();
    for (method, template) in documented_operations(&doc) {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let path = concrete(&template);
        let body = matches!(method, Method::POST | Method::PATCH).then(|| json!({}));
        let r = app.call(method.clone(), &path, None, body).await;
        assert_ne!(
            r.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {template}: {}",
            r.body
        );
        // A route may answer 404 for a missing resource, never the router's `not_found`.
        assert!(
            !(r.status == StatusCode::NOT_FOUND
                && (r.code() == "not_found" || method == Method::HEAD)),
            "{method} {template} is documented but not served"
        );
        let documented = doc["paths"][&template][method.as_str().to_lowercase()]["responses"]
            .as_object()
            .unwrap();
        assert!(
            documented.contains_key(r.status.as_str()),
            "{method} {template} answered {} which the document does not list: {}",
            r.status,
            r.body
        );
    }
}

/// The fuzzer runs with rate limits off, so the documented 429 is checked here.
#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_answer_matches_the_document() {
    let app = TestApp::spawn_with(Backend::Embedded, "", |c| {
        c.rate_limits.login = Some("1/1h".parse().unwrap());
    })
    .await;
    let doc = document();
    let documented = &doc["components"]["responses"]["TooManyRequests"];
    let login = json!({"email": "nobody@example.com", "password": "wrong"});
    let first = app.post("/api/auth/login", login.clone()).await;
    assert_eq!(first.status, StatusCode::UNAUTHORIZED, "{}", first.body);
    let r = app.post("/api/auth/login", login).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert_eq!(r.body["success"], false);
    assert!(r.body["message"].is_string());
    let codes = documented["content"]["application/json"]["schema"]["properties"]["code"]["enum"]
        .as_array()
        .unwrap();
    assert!(codes.contains(&r.body["code"]), "{}", r.body);
    let headers = documented["headers"].as_object().unwrap();
    assert_eq!(
        headers.len(),
        4,
        "Retry-After and the three RateLimit-* headers"
    );
    for name in headers.keys() {
        let value = r
            .headers
            .get(name.as_str())
            .unwrap_or_else(|| panic!("429 lacks the documented {name} header: {:?}", r.headers));
        let n: u64 = value
            .to_str()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("{name}: {value:?} is not the documented integer"));
        if name == "Retry-After" {
            assert!(n >= 1, "Retry-After is at least 1");
        }
    }
    assert_eq!(r.headers["ratelimit-remaining"], "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_served_endpoint_is_documented() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    let doc = document();
    let documented = documented_operations(&doc);
    let mut served = BTreeSet::new();
    for template in route_table_paths() {
        let path = concrete(&template);
        // Forward-auth decides every method like GET (PUT included): the document lists
        // GET and HEAD and says so.
        if path == "/api/auth/verify" {
            for method in [Method::PUT, Method::OPTIONS] {
                let r = app.call(method.clone(), &path, None, None).await;
                assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {path}");
            }
            served.insert(("GET".to_string(), template.clone()));
            served.insert(("HEAD".to_string(), template.clone()));
            continue;
        }
        // No other endpoint takes PUT, so every route answers 405 and names its methods.
        let r = app.call(Method::PUT, &path, None, None).await;
        assert_eq!(
            r.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "PUT {path}: a path in the route table must answer 405 with Allow: {}",
            r.body
        );
        let allow = r.headers["allow"].to_str().unwrap();
        for method in allow.split(',').map(str::trim) {
            served.insert((method.to_string(), template.clone()));
        }
        let options = app.call(Method::OPTIONS, &path, None, None).await;
        assert_eq!(
            options.headers["allow"].to_str().unwrap(),
            format!("{allow}, OPTIONS"),
            "OPTIONS {path} advertises the path's own methods"
        );
    }
    served.insert(("GET".to_string(), "/health".to_string()));
    let health = app.call(Method::GET, "/health", None, None).await;
    assert_eq!(health.status, StatusCode::OK);
    served.insert(("GET".to_string(), "/favicon.ico".to_string()));
    let icon = app.call(Method::GET, "/favicon.ico", None, None).await;
    assert_eq!(icon.status, StatusCode::OK);

    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in openapi/openapi.json: {undocumented:?}"
    );
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        unserved.is_empty(),
        "documented but not in the route table: {unserved:?}"
    );
}
