//! A local stub of GitHub's OAuth endpoints and the two REST endpoints Portcullis reads, as
//! GitHub documents them (`/login/oauth/authorize`, `/login/oauth/access_token`, `GET /user`,
//! `GET /user/emails`). GitHub itself is not reachable from the tests; this is a stub, not
//! GitHub. It checks the client secret, the single-use code and its PKCE verifier.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

/// What the stub answers and what it saw.
#[derive(Default)]
pub struct GithubState {
    /// `GET /user`.
    pub user: Value,
    /// `GET /user/emails`.
    pub emails: Value,
    codes: HashMap<String, (String, bool)>,
    /// Whether every token request carried the right secret and PKCE verifier.
    pub exchanges: Vec<bool>,
}

/// The running stub: `web_url` is its base, `api_url` its `/api/v3`.
pub struct GithubStub {
    pub base: String,
    pub state: Arc<Mutex<GithubState>>,
    task: tokio::task::JoinHandle<()>,
}

impl GithubStub {
    /// Starts on loopback for the app `client_secret`.
    pub async fn start(client_secret: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(GithubState::default()));
        let secret = Arc::new(client_secret.to_owned());
        let task = {
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (state, secret) = (Arc::clone(&state), Arc::clone(&secret));
                    tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            let (state, secret) = (Arc::clone(&state), Arc::clone(&secret));
                            async move { Ok::<_, Infallible>(answer(req, &state, &secret).await) }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        Self { base, state, task }
    }
}

impl Drop for GithubStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn json_reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn answer(
    req: Request<Incoming>,
    state: &Mutex<GithubState>,
    secret: &str,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "Bearer gho_stub_token");
    match path.as_str() {
        "/login/oauth/authorize" => {
            let code = format!("code{}", rand::random::<u32>());
            let challenge = query.get("code_challenge").cloned().unwrap_or_default();
            let s256 = query
                .get("code_challenge_method")
                .is_some_and(|m| m == "S256");
            state
                .lock()
                .unwrap()
                .codes
                .insert(code.clone(), (challenge, s256));
            let mut to = url::Url::parse(query.get("redirect_uri").unwrap()).unwrap();
            to.query_pairs_mut()
                .append_pair("code", &code)
                .append_pair("state", query.get("state").map_or("", String::as_str));
            Response::builder()
                .status(StatusCode::FOUND)
                .header("location", to.as_str())
                .body(Full::new(Bytes::new()))
                .unwrap()
        }
        "/login/oauth/access_token" => {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let form: HashMap<String, String> =
                url::form_urlencoded::parse(&body).into_owned().collect();
            let mut s = state.lock().unwrap();
            let issued = form.get("code").and_then(|c| s.codes.remove(c));
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let ok = issued.is_some_and(|(challenge, s256)| {
                s256 && B64.encode(Sha256::digest(verifier.as_bytes())) == challenge
            }) && form.get("client_secret").is_some_and(|v| v == secret);
            s.exchanges.push(ok);
            // GitHub answers a bad code with 200 and an error field.
            if ok {
                json_reply(
                    StatusCode::OK,
                    json!({"access_token": "gho_stub_token", "token_type": "bearer", "scope": "read:user,user:email"}),
                )
            } else {
                json_reply(
                    StatusCode::OK,
                    json!({"error": "bad_verification_code", "error_description": "The code passed is incorrect or expired."}),
                )
            }
        }
        "/api/v3/user" if authorized => {
            json_reply(StatusCode::OK, state.lock().unwrap().user.clone())
        }
        "/api/v3/user/emails" if authorized => {
            json_reply(StatusCode::OK, state.lock().unwrap().emails.clone())
        }
        _ => json_reply(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
    }
}
