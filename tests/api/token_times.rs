//! Token times: an access token whose `iat` lies ahead of the clock by more than the
//! tolerated skew, or whose `exp` lies further from its `iat` than the configured access
//! lifetime (plus the skew), is refused on every way in: the proxy, the account API and
//! forward-auth. The tokens are signed with the gateway's own key file, so only the times
//! are wrong.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::EchoUpstream;
use crate::support::app::*;

fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("seconds fit")
}

/// The claims of `token`, read without checking them.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a compact JWS");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

/// `claims` signed as the gateway signs: its signing key file and `kid`, EdDSA.
fn sign_as_gateway(app: &TestApp, claims: &Value) -> String {
    let pem = std::fs::read(&app.gw.app.config.tokens.signing_key_file).expect("key file");
    let key = EncodingKey::from_ed_pem(&pem).expect("Ed25519 key");
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(app.gw.app.keys.signing_kid().to_owned());
    jsonwebtoken::encode(&header, claims, &key).expect("signed")
}

/// One case: the name, `iat` (relative to now; `None` leaves it out), `exp - iat`
/// relative to the configured lifetime, and whether the token must be accepted.
struct Case {
    name: &'static str,
    iat: Option<i64>,
    exp_beyond_ttl: i64,
    accepted: bool,
}

const YEAR: i64 = 365 * 24 * 3600;

const CASES: &[Case] = &[
    Case {
        name: "iat now, exp = iat + ttl",
        iat: Some(0),
        exp_beyond_ttl: 0,
        accepted: true,
    },
    Case {
        name: "iat +10 s",
        iat: Some(10),
        exp_beyond_ttl: 0,
        accepted: true,
    },
    Case {
        name: "iat +59 s",
        iat: Some(59),
        exp_beyond_ttl: 0,
        accepted: true,
    },
    Case {
        name: "iat -5 min, exp = iat + ttl",
        iat: Some(-300),
        exp_beyond_ttl: 0,
        accepted: true,
    },
    Case {
        name: "exp = iat + ttl + 30 s",
        iat: Some(0),
        exp_beyond_ttl: 30,
        accepted: true,
    },
    Case {
        name: "iat +2 min",
        iat: Some(120),
        exp_beyond_ttl: 0,
        accepted: false,
    },
    Case {
        name: "iat +1 day",
        iat: Some(86_400),
        exp_beyond_ttl: 0,
        accepted: false,
    },
    Case {
        name: "exp = iat + ttl + 1 h",
        iat: Some(0),
        exp_beyond_ttl: 3600,
        accepted: false,
    },
    Case {
        name: "exp = iat + ttl + 61 s",
        iat: Some(0),
        exp_beyond_ttl: 61,
        accepted: false,
    },
    Case {
        name: "exp years ahead",
        iat: Some(0),
        exp_beyond_ttl: 5 * YEAR,
        accepted: false,
    },
    Case {
        name: "iat years ago, exp years ahead",
        iat: Some(-3 * YEAR),
        exp_beyond_ttl: 6 * YEAR,
        accepted: false,
    },
    Case {
        name: "iat missing",
        iat: None,
        exp_beyond_ttl: 0,
        accepted: false,
    },
];

/// The claims of `case`, for the session behind `real` (a token the gateway issued).
fn case_claims(real: &Value, case: &Case, ttl: i64) -> Value {
    let now = now();
    let iat = now + case.iat.unwrap_or(0);
    let mut claims = json!({
        "sub": real["sub"], "sid": real["sid"], "iss": real["iss"], "amr": real["amr"],
        "jti": uuid::Uuid::new_v4().to_string(),
        "exp": iat + ttl + case.exp_beyond_ttl,
    });
    if case.iat.is_some() {
        claims["iat"] = json!(iat);
    }
    claims
}

#[tokio::test(flavor = "multi_thread")]
async fn token_times_are_checked_on_every_way_in() {
    for backend in backends() {
        let up = EchoUpstream::start().await;
        let route = format!(
            "[[routes]]\nname = \"app\"\npath_prefix = \"/app\"\nupstream = \"{}\"\npolicy = \"authenticated\"\n",
            up.url()
        );
        let app = TestApp::spawn(backend, &route).await;
        app.verified_user("times@example.com").await;
        let real = claims_of(&app.login("times@example.com").await.access);
        let ttl =
            i64::try_from(app.gw.app.config.tokens.access_ttl.get().as_secs()).expect("ttl fits");
        for case in CASES {
            let token = sign_as_gateway(&app, &case_claims(&real, case, ttl));
            let expected = if case.accepted {
                StatusCode::OK
            } else {
                StatusCode::UNAUTHORIZED
            };
            for path in ["/app/x", "/api/auth/profile", "/api/auth/verify"] {
                let status = app.get_as(&token, path).await.status;
                assert_eq!(status, expected, "{backend:?} {}: {path}", case.name);
            }
        }
    }
}
