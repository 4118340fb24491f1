//! A whole gateway for API stories: real backends, a real SMTP sink, a real HTTP client.
//!
//! Every story runs on the embedded pair (SQLite + memory) and, when
//! `PORTCULLIS_TEST_POSTGRES_URL` and `PORTCULLIS_TEST_REDIS_URL` are set, on the shared pair
//! (a fresh PostgreSQL database + a random Redis prefix). Under `CI=true` the shared pair is
//! mandatory.

#![allow(dead_code)]

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::db::TestDb;
use super::redis::TestRedis;
use super::smtp::{ReceivedMail, SmtpSink};
use super::{Scratch, client, parse_config, start_gateway, test_config_text};
use portcullis::config::Config;
use portcullis::server::RunningGateway;

/// A strong password that meets the policy.
pub const PASSWORD: &str = "Corr3ct-Horse!";

/// Which backend pair a story runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite + in-process sessions.
    Embedded,
    /// PostgreSQL + Redis.
    Shared,
}

/// The backend pairs to run every story on.
pub fn backends() -> Vec<Backend> {
    let mut out = vec![Backend::Embedded];
    let pg = super::db::postgres_admin_url();
    let redis = super::redis::redis_url();
    if pg.is_some() && redis.is_some() {
        out.push(Backend::Shared);
    }
    out
}

/// One running gateway and everything it talks to.
pub struct TestApp {
    pub gw: RunningGateway,
    pub smtp: SmtpSink,
    pub backend: Backend,
    pub http: reqwest::Client,
    pub db: Option<TestDb>,
    pub redis: Option<TestRedis>,
    _scratch: Scratch,
}

/// An HTTP answer: status, headers, JSON body (`Null` when not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    /// `body.code` as a string.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

/// Tokens from a login or refresh.
#[derive(Clone, Debug)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
    pub body: Value,
}

impl TestApp {
    /// Starts a gateway on `backend` with `extra` config appended (routes, overrides).
    pub async fn spawn(backend: Backend, extra: &str) -> Self {
        Self::spawn_with(backend, extra, |_| {}).await
    }

    /// As [`TestApp::spawn`], with a last chance to adjust the parsed config.
    pub async fn spawn_with(
        backend: Backend,
        extra: &str,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        Self::spawn_edited(backend, extra, |text| text, adjust).await
    }

    /// As [`TestApp::spawn_with`], with the config text edited before it is parsed (for
    /// what must hold when it is validated: `[tls]` wants an `https://` public URL).
    pub async fn spawn_edited(
        backend: Backend,
        extra: &str,
        edit: impl FnOnce(String) -> String,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        let scratch = Scratch::new();
        let smtp = SmtpSink::start();
        let text = edit(test_config_text(scratch.dir.path(), extra));
        let mut config = parse_config(&text);
        config.mail.url = smtp.url().parse().expect("the sink's URL");
        let (db, redis) = match backend {
            Backend::Embedded => (None, None),
            Backend::Shared => {
                let db = TestDb::postgres().await.expect("PostgreSQL configured");
                let redis = TestRedis::start().await.expect("Redis configured");
                config.storage.url = db.url().parse().expect("the test database's URL");
                config.sessions.url = redis.url.clone();
                config.sessions.key_prefix = redis.prefix.clone();
                (Some(db), Some(redis))
            }
        };
        adjust(&mut config);
        let gw = start_gateway(config);
        Self {
            gw,
            smtp,
            backend,
            http: client(),
            db,
            redis,
            _scratch: scratch,
        }
    }

    /// A second gateway instance sharing this one's database, sessions and signing key.
    pub fn spawn_peer(&self) -> RunningGateway {
        let mut config = (*self.gw.app.config).clone();
        config.server.listen = format!("127.0.0.1:{}", super::free_port()).parse().unwrap();
        config.server.admin_listen = format!("127.0.0.1:{}", super::free_port()).parse().unwrap();
        start_gateway(config)
    }

    /// The gateway's base URL.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gw.url())
    }

    async fn answer(response: reqwest::Response) -> Answer {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Self::answer(request.send().await.expect("request sent")).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(reqwest::Method::POST, path, None, Some(body))
            .await
    }

    /// `POST path` as the holder of `token`.
    pub async fn post_as(&self, token: &str, path: &str, body: Value) -> Answer {
        self.call(reqwest::Method::POST, path, Some(token), Some(body))
            .await
    }

    /// `GET path` as the holder of `token`.
    pub async fn get_as(&self, token: &str, path: &str) -> Answer {
        self.call(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    /// Registers an account and returns the answer.
    /// A connection of its own to the instance's database, as the operator's CLI opens it
    /// (the instance keeps its store to itself).
    pub async fn store(&self) -> std::sync::Arc<dyn portcullis::store::UserStore> {
        portcullis::store::connect(&self.gw.app.config.storage.url, 2)
            .await
            .expect("the instance's database")
    }

    pub async fn register(&self, email: &str) -> Answer {
        self.post(
            "/api/auth/register",
            json!({"email": email, "password": PASSWORD, "first_name": "Ada", "last_name": "Lovelace"}),
        )
        .await
    }

    /// The next mail to `to` (10 s at most).
    pub async fn mail_to(&self, to: &str) -> ReceivedMail {
        self.smtp
            .wait_for_mail_to(to, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no mail reached {to}"))
    }

    /// Registers and verifies an account through the mailed link.
    pub async fn verified_user(&self, email: &str) {
        let r = self.register(email).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let token = self.mail_to(email).await.token().expect("token in mail");
        let r = self
            .post("/api/auth/verify-email", json!({"token": token}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }

    /// Grants `role` to the account of `email`, as the operator's command line does.
    pub async fn grant_role(&self, email: &str, role: &str) {
        let store = self.store().await;
        let user = store
            .find_by_email(&email.parse().expect("an address"))
            .await
            .expect("the store answers")
            .unwrap_or_else(|| panic!("no account {email}"));
        let by = portcullis::store::admin::By::OPERATOR;
        let granted = portcullis::store::admin::grant_role_to(&*store, &user, role, by).await;
        assert!(granted.expect("the role is granted"), "{email} had {role}");
    }

    /// Turns TOTP on for `email` through the API: its secret and recovery codes. The code
    /// sent is the previous step's, so that this step's and the next stay unused.
    pub async fn enable_totp(&self, email: &str) -> (String, Vec<String>) {
        let token = self.login(email).await.access;
        let setup = self.post_as(&token, "/api/auth/setup-2fa", json!({})).await;
        assert_eq!(setup.status, StatusCode::OK, "{}", setup.body);
        let secret = setup.body["data"]["secret"].as_str().unwrap().to_owned();
        super::otp::clear_of_step_end(std::time::Duration::from_secs(3)).await;
        let code = super::otp::totp(&secret, -1);
        let body = json!({"secret": secret, "token": code, "password": PASSWORD});
        let enabled = self.post_as(&token, "/api/auth/enable-2fa", body).await;
        assert_eq!(enabled.status, StatusCode::OK, "{}", enabled.body);
        let codes = enabled.body["data"]["recovery_codes"]
            .as_array()
            .expect("recovery codes")
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        (secret, codes)
    }

    /// Logs in with the standard password; panics unless it succeeds.
    pub async fn login(&self, email: &str) -> Tokens {
        let r = self
            .post(
                "/api/auth/login",
                json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        tokens_of(&r.body)
    }

    /// Logs in with `password`; panics unless it succeeds; the access token.
    pub async fn login_with(&self, email: &str, password: &str) -> String {
        let body = json!({"email": email, "password": password});
        let r = self.post("/api/auth/login", body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        tokens_of(&r.body).access
    }
}

/// `data.tokens` of a login or refresh answer.
pub fn tokens_of(body: &Value) -> Tokens {
    let t = &body["data"]["tokens"];
    Tokens {
        access: t["access_token"]
            .as_str()
            .expect("access_token")
            .to_string(),
        refresh: t["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_string(),
        body: body.clone(),
    }
}

/// Verifies an EdDSA JWT against the served JWKS with ed25519-dalek directly (not the
/// gateway's own verifier) and returns its header and claims.
pub async fn verify_with_jwks(app: &TestApp, token: &str) -> (Value, Value) {
    let jwks: Value = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a compact JWS");
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(header["alg"], "EdDSA");
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the token's kid is in the JWKS");
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    let x: [u8; 32] = URL_SAFE_NO_PAD
        .decode(key["x"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let sig: [u8; 64] = URL_SAFE_NO_PAD
        .decode(parts[2])
        .unwrap()
        .try_into()
        .unwrap();
    VerifyingKey::from_bytes(&x)
        .unwrap()
        .verify(
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &Signature::from_bytes(&sig),
        )
        .expect("signature verifies with the published key");
    (header, claims)
}
