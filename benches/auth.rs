//! Micro-benchmarks of the per-request authentication work: JWT verification (cold, and
//! through the gatekeeper's cache), session lookups (the whole record with `get`, what the
//! check reads with `liveness`; memory, and Redis when `PORTCULLIS_TEST_REDIS_URL` is set;
//! cached), the identity header rewrite, and a browser's cookie renewal (`renewal/cookie`).
//!
//! `renewal/cookie` is what the proxy does when an access cookie has expired: read the
//! refresh cookie, rotate the session's refresh token, mint an access token, and build both
//! `Set-Cookie` values (`api::browser::renew`), on an instance with SQLite in a temp dir and
//! `memory://` sessions, one user signed in once. Each iteration presents the refresh token
//! the previous one handed out, so it times a rotation, never the reuse grace window.
//!
//! Timing only: that the cached check allocates nothing is asserted by `cargo test`
//! (`tests/allocations.rs`, `a_cached_gatekeeper_check_allocates_nothing`).
//!
//! `cargo bench --bench auth`

use std::cell::RefCell;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use http::{HeaderMap, HeaderValue, Method};
use tokio::runtime::Runtime;

use portcullis::access::gatekeeper::Gatekeeper;
use portcullis::access::identity::IdentityHeaderNames;
use portcullis::api::ApiRequest;
use portcullis::api::browser::{self, Renewal};
use portcullis::app::App;
use portcullis::auth::jwt::KeyRing;
use portcullis::config::Config;
use portcullis::config::IdentityHeadersConfig;
use portcullis::domain::{Email, UserId};
use portcullis::session::{
    MemorySessionStore, NewSession, RedisSessionStore, SessionId, SessionStore,
};
use portcullis::store::{self, NewUser, UserStore};

struct Fixture {
    keys: KeyRing,
    token: String,
    session_id: SessionId,
    memory: Arc<dyn SessionStore>,
    redis: Option<Arc<dyn SessionStore>>,
    users: Arc<dyn UserStore>,
    _dir: tempfile::TempDir,
}

fn new_session(id: SessionId, user: UserId) -> NewSession {
    NewSession {
        id,
        user_id: user,
        ip: "127.0.0.1".into(),
        user_agent: "bench".into(),
        two_factor: false,
        passkey: portcullis::session::PasskeyUse::None,
        provider: None,
        auth_time: None,
        remember_me: false,
        refresh_hash: "0".repeat(64),
        idle_ttl: Duration::from_secs(3600),
        absolute_ttl: Duration::from_secs(3600),
        max_per_user: 5,
    }
}

fn fixture(rt: &Runtime) -> Fixture {
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/bench.db", dir.path().display())
            .parse()
            .expect("a storage URL");
        let users = store::connect(&url, 2).await.expect("sqlite store");
        let user = users
            .create_user(NewUser {
                email: Email::parse("bench@example.com").expect("email"),
                password_hash: "$2b$04$abcdefghijklmnopqrstuu5Jh7qMJ9YQ8bxv5Wz3m0HMy0dq6yRmS"
                    .into(),
                first_name: "Bench".into(),
                last_name: "Mark".into(),
                language: String::new(),
            })
            .await
            .expect("user");
        let keys = KeyRing::from_keys("portcullis", SigningKey::from_bytes(&[7; 32]), &[]);
        let session_id = SessionId::generate();
        let memory: Arc<dyn SessionStore> = Arc::new(MemorySessionStore::new());
        memory
            .create(new_session(session_id, user.id))
            .await
            .expect("memory session");
        let redis = match std::env::var("PORTCULLIS_TEST_REDIS_URL") {
            Ok(url) if !url.is_empty() => {
                let prefix = format!("portcullis_bench_{}:", uuid::Uuid::new_v4().simple());
                let store: Arc<dyn SessionStore> = Arc::new(
                    RedisSessionStore::connect(&url, &prefix)
                        .await
                        .expect("redis"),
                );
                store
                    .create(new_session(session_id, user.id))
                    .await
                    .expect("redis session");
                Some(store)
            }
            _ => None,
        };
        let (token, _) = keys
            .issue_access(
                &user.id.to_string(),
                &session_id.to_string(),
                &["pwd"],
                Duration::from_secs(900),
            )
            .expect("token");
        Fixture {
            keys,
            token,
            session_id,
            memory,
            redis,
            users,
            _dir: dir,
        }
    })
}

fn bench_jwt(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let f = fixture(&rt);
    c.bench_function("jwt_verify/cold", |b| {
        b.iter(|| f.keys.verify_access(black_box(&f.token)).expect("valid"))
    });
    let gatekeeper = Gatekeeper::new();
    let check = || {
        rt.block_on(gatekeeper.check(&f.token, &f.keys, &*f.memory, &*f.users))
            .expect("allowed")
    };
    // Fills the caches, so that what follows times the cached check.
    check();
    c.bench_function("gatekeeper_check/cached_memory", |b| {
        b.to_async(&rt).iter(|| async {
            gatekeeper
                .check(black_box(&f.token), &f.keys, &*f.memory, &*f.users)
                .await
                .expect("allowed")
        })
    });
}

fn bench_sessions(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let f = fixture(&rt);
    c.bench_function("session_get/memory", |b| {
        b.to_async(&rt)
            .iter(|| async { f.memory.get(black_box(&f.session_id)).await.expect("get") })
    });
    c.bench_function("session_liveness/memory", |b| {
        b.to_async(&rt).iter(|| async {
            f.memory
                .liveness(black_box(&f.session_id))
                .await
                .expect("liveness")
        })
    });
    if let Some(redis) = &f.redis {
        c.bench_function("session_get/redis", |b| {
            b.to_async(&rt)
                .iter(|| async { redis.get(black_box(&f.session_id)).await.expect("get") })
        });
        c.bench_function("session_liveness/redis", |b| {
            b.to_async(&rt).iter(|| async {
                redis
                    .liveness(black_box(&f.session_id))
                    .await
                    .expect("liveness")
            })
        });
        let gatekeeper = Gatekeeper::new();
        c.bench_function("gatekeeper_check/cached_redis", |b| {
            b.to_async(&rt).iter(|| async {
                gatekeeper
                    .check(black_box(&f.token), &f.keys, &**redis, &*f.users)
                    .await
                    .expect("allowed")
            })
        });
    }
}

fn bench_identity_rewrite(c: &mut Criterion) {
    let names = IdentityHeaderNames::new(&IdentityHeadersConfig::default());
    c.bench_function("identity_header_rewrite", |b| {
        b.iter(|| {
            let mut request = pingora::http::RequestHeader::build("GET", b"/app/items", Some(16))
                .expect("request");
            for (name, value) in [
                ("host", "app.example.com"),
                ("user-agent", "bench"),
                ("accept", "*/*"),
                ("authorization", "Bearer x"),
                ("x_user_id", "spoofed"),
            ] {
                request.insert_header(name, value).expect("header");
            }
            for name in names.spoofed(request.headers.keys()) {
                request.remove_header(&name);
            }
            request
                .insert_header(
                    names.user_id.clone(),
                    "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
                )
                .expect("h");
            request
                .insert_header(names.email.clone(), "bench@example.com")
                .expect("h");
            request
                .insert_header(names.roles.clone(), "admin,ops")
                .expect("h");
            request
                .insert_header(names.session_id.clone(), "0123456789abcdef0123456789abcdef")
                .expect("h");
            black_box(request)
        })
    });
}

const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

/// An instance on SQLite in `dir` and `memory://` sessions, without rate limits.
fn renewal_app(dir: &Path) -> Arc<App> {
    let dir = dir.display();
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:18080"
admin_listen = "127.0.0.1:18081"
public_url = "http://127.0.0.1:18080"
[logging]
dir = ""
[storage]
url = "sqlite://{dir}/bench.db"
[sessions]
url = "memory://"
[tokens]
signing_key_file = "{dir}/signing-key.pem"
[passwords]
bcrypt_cost = 4
[mail]
url = "file://{dir}/outbox"
[two_factor]
encryption_key_file = "{dir}/totp.key"
[rate_limits]
global = ""
register = ""
login = ""
password_reset = ""
"#
    );
    let config = Config::load_from(Path::new("bench.toml"), &text, Vec::new()).expect("config");
    App::new(config).expect("app state")
}

/// Creates one user and signs them in through the API: the `Cookie` header carrying the
/// refresh token, as a browser would send it.
async fn signed_in_browser(app: &App) -> HeaderMap {
    let password = "Bench-Password-1";
    // The instance keeps its store to itself: open the database as the operator's CLI does.
    let store = portcullis::store::connect(&app.config.storage.url, 2)
        .await
        .expect("the instance's database");
    store
        .create_user(NewUser {
            email: Email::parse("renew@example.com").expect("email"),
            password_hash: app.hasher.hash(password).await.expect("hash"),
            first_name: "Bench".into(),
            last_name: "Mark".into(),
            language: String::new(),
        })
        .await
        .expect("user");
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = serde_json::json!({"email": "renew@example.com", "password": password});
    let reply = portcullis::api::dispatch(
        app,
        ApiRequest {
            method: Method::POST,
            path: "/api/auth/login".into(),
            query: None,
            headers,
            body: body.to_string().into(),
            client_ip: CLIENT_IP,
            user_agent: "bench".into(),
            original: None,
        },
    )
    .await;
    let refresh = reply.body_json()["data"]["tokens"]["refresh_token"]
        .as_str()
        .expect("signed in");
    cookie_header(&browser::refresh_cookie(app, refresh, 3600))
}

/// The `Cookie` header a browser sends back for one `Set-Cookie` value.
fn cookie_header(set_cookie: &str) -> HeaderMap {
    let pair = set_cookie.split(';').next().expect("name=value");
    let mut headers = HeaderMap::new();
    headers.insert(http::header::COOKIE, pair.parse().expect("a cookie header"));
    headers
}

fn bench_renewal(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let app = renewal_app(dir.path());
    let first = rt.block_on(signed_in_browser(&app));
    // The refresh cookie's name, to pick it out of the renewal's `Set-Cookie` values.
    let name = browser::refresh_cookie(&app, "", 0);
    let name = name.split('=').next().expect("a cookie name").to_owned() + "=";
    let browser_headers = RefCell::new(first);
    let mut group = c.benchmark_group("renewal");
    group.bench_function("cookie", |b| {
        b.to_async(&rt).iter(|| async {
            let headers = browser_headers.take();
            let Renewal::Renewed { cookies, .. } =
                browser::renew(&app, black_box(&headers), CLIENT_IP).await
            else {
                panic!("the refresh cookie renews");
            };
            let refresh = cookies
                .iter()
                .find(|c| c.starts_with(&name))
                .expect("a rotated refresh cookie");
            browser_headers.replace(cookie_header(refresh));
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_jwt,
    bench_sessions,
    bench_identity_rewrite,
    bench_renewal
);
criterion_main!(benches);
