//! A hostile OpenID Provider stub, for the attacks a real provider cannot be made to send:
//! its token endpoint answers an ID token forged the way [`Attack`] says (wrong `iss`,
//! `aud`, `azp`, `nonce`, expired, `alg: none`, HS256 keyed with its public key, a key the
//! JWKS does not have, another provider's key), and its authorization endpoint can answer
//! an error with markup in it. It records what the gateway sent (PKCE). Test use only: it
//! is not an OpenID Provider, and its tokens are hand-made on purpose.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
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
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

/// What the next ID token (or authorization answer) does wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// Nothing: a sound token.
    None,
    /// `iss` names another issuer.
    WrongIssuer,
    /// `aud` is another client.
    WrongAudience,
    /// `aud` has the client and another, and `azp` is the other.
    ForeignAzp,
    /// `aud` has the client and another, and no `azp`.
    MissingAzp,
    /// `nonce` is not the one sent.
    WrongNonce,
    /// No `nonce`.
    MissingNonce,
    /// `exp` an hour ago.
    Expired,
    /// `iat` an hour ahead.
    IssuedInTheFuture,
    /// `alg: none`, no signature.
    AlgNone,
    /// HS256 with the provider's public key (its JWK's JSON text) as the HMAC key.
    HmacWithPublicKey,
    /// Signed by a key the JWKS lacks, under a `kid` the JWKS lacks.
    UnknownKid,
    /// Signed by another provider's key under this provider's `kid`.
    OtherProvidersKey,
    /// The signature's bytes changed.
    TamperedSignature,
    /// The authorization endpoint answers `error` with markup in it.
    ErrorWithMarkup,
}

/// What the stub remembers of one authorization request, by the code it issued.
#[derive(Clone, Debug, Default)]
struct Issued {
    nonce: String,
    challenge: String,
    challenge_method: String,
    used: bool,
}

/// Shared state of a running stub.
#[derive(Default)]
pub struct StubState {
    /// The attack of the next answers.
    pub attack: Option<Attack>,
    /// The `sub` of the next token.
    pub subject: String,
    /// The claims added to the next token (email, email_verified, groups, …).
    pub claims: serde_json::Map<String, Value>,
    codes: HashMap<String, Issued>,
    /// Token requests seen: (code, had a verifier that matched the S256 challenge).
    pub token_requests: Vec<(String, bool)>,
    /// How many times the JWKS was fetched.
    pub jwks_fetches: usize,
    /// How many times the discovery document was fetched.
    pub discovery_fetches: usize,
    /// How long the discovery document takes to answer (to make first uses overlap).
    pub discovery_delay: std::time::Duration,
    /// Fields set in (or, as `null`, taken from) the discovery document.
    pub discovery: serde_json::Map<String, Value>,
    /// The `iss` its authorization responses carry (RFC 9207); none by default.
    pub callback_iss: Option<String>,
}

/// A running stub on loopback.
pub struct HostileOp {
    /// Its issuer, `http://127.0.0.1:PORT`.
    pub issuer: String,
    /// The client id it issues tokens to.
    pub client_id: String,
    /// What it does next, and what it saw.
    pub state: Arc<Mutex<StubState>>,
    task: tokio::task::JoinHandle<()>,
}

/// A P-256 key with its JWK.
struct Key {
    signing: SigningKey,
    kid: String,
}

impl Key {
    fn new(kid: &str) -> Self {
        loop {
            if let Ok(signing) = SigningKey::from_slice(&rand::random::<[u8; 32]>()) {
                return Self {
                    signing,
                    kid: kid.to_owned(),
                };
            }
        }
    }

    fn jwk(&self) -> Value {
        let point = self.signing.verifying_key().to_encoded_point(false);
        json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": B64.encode(point.x().expect("x")), "y": B64.encode(point.y().expect("y")),
        })
    }

    fn sign(&self, input: &[u8]) -> Vec<u8> {
        let signature: Signature = self.signing.sign(input);
        signature.to_bytes().to_vec()
    }
}

struct Keys {
    own: Key,
    foreign: Key,
}

impl HostileOp {
    /// Starts on an ephemeral loopback port, issuing to `client_id`.
    pub async fn start(client_id: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind stub OP");
        let addr: SocketAddr = listener.local_addr().expect("address");
        let issuer = format!("http://{addr}");
        let state = Arc::new(Mutex::new(StubState {
            subject: "mallory-subject".into(),
            ..StubState::default()
        }));
        let keys = Arc::new(Keys {
            own: Key::new("stub-key-1"),
            foreign: Key::new("another-providers-key"),
        });
        let ctx = Arc::new((issuer.clone(), client_id.to_owned()));
        let task = {
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (state, keys, ctx) =
                        (Arc::clone(&state), Arc::clone(&keys), Arc::clone(&ctx));
                    tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            let (state, keys, ctx) =
                                (Arc::clone(&state), Arc::clone(&keys), Arc::clone(&ctx));
                            async move { Ok::<_, Infallible>(answer(req, &state, &keys, &ctx).await) }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        Self {
            issuer,
            client_id: client_id.to_owned(),
            state,
            task,
        }
    }

    /// Sets the attack of the next answers.
    pub fn attack(&self, attack: Attack) {
        self.state.lock().unwrap().attack = Some(attack);
    }
}

impl Drop for HostileOp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

fn query_of(uri: &hyper::Uri) -> HashMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

async fn answer(
    req: Request<Incoming>,
    state: &Mutex<StubState>,
    keys: &Keys,
    ctx: &(String, String),
) -> Response<Full<Bytes>> {
    let (issuer, client_id) = ctx;
    match req.uri().path() {
        "/.well-known/openid-configuration" => discovery(state, issuer).await,
        "/jwks" => {
            state.lock().unwrap().jwks_fetches += 1;
            reply(
                StatusCode::OK,
                "application/json",
                json!({"keys": [keys.own.jwk()]}).to_string(),
            )
        }
        "/authorize" => authorize(&query_of(req.uri()), state),
        "/token" => {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let form: HashMap<String, String> =
                url::form_urlencoded::parse(&body).into_owned().collect();
            token(&form, state, keys, issuer, client_id)
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found".into()),
    }
}

/// The discovery document, with the test's changes, after the test's delay.
async fn discovery(state: &Mutex<StubState>, issuer: &str) -> Response<Full<Bytes>> {
    let (delay, changes) = {
        let mut s = state.lock().unwrap();
        s.discovery_fetches += 1;
        (s.discovery_delay, s.discovery.clone())
    };
    tokio::time::sleep(delay).await;
    let mut document = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "HS256", "none"],
        "code_challenge_methods_supported": ["S256"],
    });
    for (k, v) in changes {
        match v {
            Value::Null => {
                document.as_object_mut().unwrap().remove(&k);
            }
            v => document[k] = v,
        }
    }
    reply(StatusCode::OK, "application/json", document.to_string())
}

/// Redirects back with a code (remembering the nonce and PKCE challenge), or an error.
fn authorize(query: &HashMap<String, String>, state: &Mutex<StubState>) -> Response<Full<Bytes>> {
    let redirect = query.get("redirect_uri").cloned().unwrap_or_default();
    let st = query.get("state").cloned().unwrap_or_default();
    let mut s = state.lock().unwrap();
    let mut location = url::Url::parse(&redirect).expect("a redirect URI");
    if s.attack == Some(Attack::ErrorWithMarkup) {
        location
            .query_pairs_mut()
            .append_pair("error", "access_denied<script>alert(1)</script>")
            .append_pair(
                "error_description",
                "<b>denied</b> & <img src=x onerror=alert(2)>",
            )
            .append_pair("state", &st);
    } else {
        let code = format!("code-{}", rand::random::<u64>());
        s.codes.insert(
            code.clone(),
            Issued {
                nonce: query.get("nonce").cloned().unwrap_or_default(),
                challenge: query.get("code_challenge").cloned().unwrap_or_default(),
                challenge_method: query
                    .get("code_challenge_method")
                    .cloned()
                    .unwrap_or_default(),
                used: false,
            },
        );
        location
            .query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", &st);
    }
    if let Some(iss) = &s.callback_iss {
        location.query_pairs_mut().append_pair("iss", iss);
    }
    Response::builder()
        .status(StatusCode::FOUND)
        .header("location", location.as_str())
        .body(Full::new(Bytes::new()))
        .expect("response")
}

/// The token endpoint: a single-use code with its PKCE verifier, then the forged token.
fn token(
    form: &HashMap<String, String>,
    state: &Mutex<StubState>,
    keys: &Keys,
    issuer: &str,
    client_id: &str,
) -> Response<Full<Bytes>> {
    let mut s = state.lock().unwrap();
    let code = form.get("code").cloned().unwrap_or_default();
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    let Some(issued) = s.codes.get_mut(&code) else {
        return invalid_grant("unknown code");
    };
    let pkce_ok = issued.challenge_method == "S256"
        && !verifier.is_empty()
        && B64.encode(Sha256::digest(verifier.as_bytes())) == issued.challenge;
    let replayed = issued.used;
    issued.used = true;
    let nonce = issued.nonce.clone();
    s.token_requests.push((code, pkce_ok));
    if replayed {
        return invalid_grant("code already used");
    }
    if !pkce_ok {
        return invalid_grant("PKCE verification failed");
    }
    let attack = s.attack.unwrap_or(Attack::None);
    let id_token = forge(attack, &s, keys, issuer, client_id, &nonce);
    reply(
        StatusCode::OK,
        "application/json",
        json!({"access_token": "stub-access", "token_type": "Bearer", "expires_in": 60, "id_token": id_token})
            .to_string(),
    )
}

fn invalid_grant(description: &str) -> Response<Full<Bytes>> {
    reply(
        StatusCode::BAD_REQUEST,
        "application/json",
        json!({"error": "invalid_grant", "error_description": description}).to_string(),
    )
}

/// The ID token `attack` calls for.
fn forge(
    attack: Attack,
    s: &StubState,
    keys: &Keys,
    issuer: &str,
    client_id: &str,
    nonce: &str,
) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "iss": issuer, "sub": s.subject, "aud": client_id, "iat": now, "exp": now + 300,
        "nonce": nonce,
    });
    for (k, v) in &s.claims {
        claims[k] = v.clone();
    }
    match attack {
        Attack::WrongIssuer => claims["iss"] = json!("http://127.0.0.1:1"),
        Attack::WrongAudience => claims["aud"] = json!("someone-else"),
        Attack::ForeignAzp => {
            claims["aud"] = json!([client_id, "someone-else"]);
            claims["azp"] = json!("someone-else");
        }
        Attack::MissingAzp => claims["aud"] = json!([client_id, "someone-else"]),
        Attack::WrongNonce => claims["nonce"] = json!("not-the-nonce"),
        Attack::MissingNonce => {
            claims.as_object_mut().unwrap().remove("nonce");
        }
        Attack::Expired => {
            claims["iat"] = json!(now - 7200);
            claims["exp"] = json!(now - 3600);
        }
        Attack::IssuedInTheFuture => claims["iat"] = json!(now + 3600),
        _ => {}
    }
    let payload = B64.encode(claims.to_string());
    let header = |alg: &str, kid: &str| {
        B64.encode(json!({"alg": alg, "kid": kid, "typ": "JWT"}).to_string())
    };
    match attack {
        Attack::AlgNone => format!("{}.{payload}.", header("none", &keys.own.kid)),
        Attack::HmacWithPublicKey => {
            use hmac::{Hmac, KeyInit, Mac};
            let input = format!("{}.{payload}", header("HS256", &keys.own.kid));
            let public = keys.own.jwk().to_string();
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(public.as_bytes()).unwrap();
            mac.update(input.as_bytes());
            format!("{input}.{}", B64.encode(mac.finalize().into_bytes()))
        }
        Attack::UnknownKid => {
            let input = format!("{}.{payload}", header("ES256", &keys.foreign.kid));
            format!(
                "{input}.{}",
                B64.encode(keys.foreign.sign(input.as_bytes()))
            )
        }
        Attack::OtherProvidersKey => {
            let input = format!("{}.{payload}", header("ES256", &keys.own.kid));
            format!(
                "{input}.{}",
                B64.encode(keys.foreign.sign(input.as_bytes()))
            )
        }
        Attack::TamperedSignature => {
            let input = format!("{}.{payload}", header("ES256", &keys.own.kid));
            let mut signature = keys.own.sign(input.as_bytes());
            signature[10] ^= 0x01;
            format!("{input}.{}", B64.encode(signature))
        }
        _ => {
            let input = format!("{}.{payload}", header("ES256", &keys.own.kid));
            format!("{input}.{}", B64.encode(keys.own.sign(input.as_bytes())))
        }
    }
}
