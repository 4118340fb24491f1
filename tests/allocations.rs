//! The per-request work that must allocate nothing, counted by a global allocator around the
//! same calls the proxy makes: the decision where an already-canonical request goes, and the
//! access check of a token whose verification, session and user are already cached.
//!
//! A test binary of its own: the counting allocator is process-wide, so in a shared binary
//! it would slow every other test. Counts are kept per thread, so the allocations of other
//! tests' threads and of a runtime's worker threads are not counted as the measured call's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use portcullis::access::gatekeeper::Gatekeeper;
use portcullis::auth::jwt::KeyRing;
use portcullis::config::{Account, Config};
use portcullis::domain::Email;
use portcullis::gateway::canonical::canonicalize;
use portcullis::gateway::forwarding::{self, ProxyHeaders};
use portcullis::gateway::routes::RouteTable;
use portcullis::metrics::Metrics;
use portcullis::session::{MemorySessionStore, NewSession, PasskeyUse, SessionId, SessionStore};
use portcullis::store::{self, NewUser, UserStore};

/// The system allocator, counting the allocations (and reallocations) of each thread.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the count is a
// const-initialised thread-local, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// How many times `f` allocated on this thread.
fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn deciding_where_a_canonical_request_goes_allocates_nothing() {
    let text = r#"
        [[routes]]
        path_prefix = "/"
        upstream = "http://127.0.0.1:3000"
        policy = "public"
        [[routes]]
        path_prefix = "/app"
        upstream = "http://127.0.0.1:3001"
        [[routes]]
        host = "secure.example"
        path_prefix = "/"
        upstream = "http://127.0.0.1:3002"
        [[routes]]
        host = "*.apps.example"
        path_prefix = "/"
        upstream = "http://127.0.0.1:3003"
        methods = ["POST", "GET"]
        networks = ["2001:db8::/32", "10.0.0.0/8"]
        users = ["9f0c1c43-6b6f-4a8e-9d4c-3f1a3c2b1a00"]
        emails = ["cached@example.com"]
        email_domains = ["*.corp.example", "example.com"]
        roles = ["dev", "ops"]
        all_roles = ["ops"]
    "#;
    let config = Config::load_from(Path::new("t.toml"), text, Vec::new()).unwrap();
    let table = RouteTable::from_config(&config, &Metrics::new()).unwrap();
    let proxy_headers = ProxyHeaders::new(&config.server.proxy_headers);
    let mut headers = http::HeaderMap::new();
    headers.insert("host", http::HeaderValue::from_static("app.example:8080"));
    headers.insert("user-agent", http::HeaderValue::from_static("curl/8"));
    headers.insert("accept", http::HeaderValue::from_static("*/*"));
    headers.insert("cookie", http::HeaderValue::from_static("theme=dark"));
    let mut tenant = headers.clone();
    tenant.insert(
        "host",
        http::HeaderValue::from_static("a.b.apps.example:8443"),
    );
    let client: std::net::IpAddr = "10.1.2.3".parse().unwrap();
    let roles = vec!["ops".to_owned()];
    let account = Account {
        id: "0d7f6c1e-2d5b-4a3a-8f52-5a4c1c9e7b11".parse().unwrap(),
        email: "cached@example.com",
        roles: &roles,
    };

    let decide = |headers: &http::HeaderMap, target: &'static str| {
        let request = canonicalize(
            &http::Method::GET,
            http::Version::HTTP_11,
            target.as_bytes(),
            headers,
            None,
        )
        .unwrap();
        let route = table
            .route_for(request.host.as_deref(), &request.path, request.flags)
            .unwrap()
            .expect("a route");
        // The route's conditions, as the policy decides them.
        let rules = &route.guard.rules;
        assert_eq!(rules.check_request(&http::Method::GET, &client), Ok(()));
        assert_eq!(rules.check_account(&account), Ok(()));
        assert!(!request.target_changed && !request.host_changed);
        let removed = forwarding::names_matching(headers, |n| proxy_headers.matches(n));
        assert!(removed.is_empty());
        assert_eq!(
            forwarding::cookies_without_credentials(headers, |t| t.contains("..")),
            None
        );
        assert!(!forwarding::must_remove_authorization(
            headers,
            false,
            |_| true
        ));
    };
    // Warm up whatever is lazily initialised.
    decide(&headers, "/app/items/42?x=1");
    for target in [
        "/app/items/42?x=1",
        "/",
        "/static/a.b-c_d~e/",
        "/app?q=%2F..%2F",
    ] {
        for (host, headers) in [("any host", &headers), ("wildcard host", &tenant)] {
            let n = allocations_in(|| decide(headers, target));
            assert_eq!(n, 0, "{target} on {host} allocated {n} times");
        }
    }
    // A target that must be resolved does allocate (the canonical copy): the counter works.
    let n = allocations_in(|| {
        let request = canonicalize(
            &http::Method::GET,
            http::Version::HTTP_11,
            b"/static/../app/x",
            &headers,
            None,
        )
        .unwrap();
        assert_eq!(request.path, "/app/x");
    });
    assert!(n > 0);
}

/// What the gatekeeper checks against: a user in SQLite, a session in memory, a signed token.
struct Signed {
    keys: KeyRing,
    token: String,
    sessions: Arc<dyn SessionStore>,
    users: Arc<dyn UserStore>,
    _dir: tempfile::TempDir,
}

async fn signed_in(amr: &[&str]) -> Signed {
    let dir = tempfile::tempdir().unwrap();
    let users = store::connect(
        &format!("sqlite://{}/a.db", dir.path().display())
            .parse()
            .expect("a SQLite URL"),
        2,
    )
    .await
    .unwrap();
    let user = users
        .create_user(NewUser {
            email: Email::parse("cached@example.com").unwrap(),
            password_hash: "$2b$04$abcdefghijklmnopqrstuu5Jh7qMJ9YQ8bxv5Wz3m0HMy0dq6yRmS".into(),
            first_name: "Cached".into(),
            last_name: "Check".into(),
            language: String::new(),
        })
        .await
        .unwrap();
    let keys = KeyRing::from_keys("portcullis", SigningKey::from_bytes(&[7; 32]), &[]);
    let id = SessionId::generate();
    let sessions: Arc<dyn SessionStore> = Arc::new(MemorySessionStore::new());
    sessions
        .create(NewSession {
            id,
            user_id: user.id,
            ip: "127.0.0.1".into(),
            user_agent: "test".into(),
            two_factor: amr.contains(&"otp"),
            passkey: PasskeyUse::None,
            provider: None,
            auth_time: None,
            remember_me: false,
            refresh_hash: "0".repeat(64),
            idle_ttl: Duration::from_secs(3600),
            absolute_ttl: Duration::from_secs(3600),
            max_per_user: 5,
        })
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp();
    let (token, _) = keys
        .issue_session_access(
            &user.id.to_string(),
            &id.to_string(),
            amr,
            now - 5,
            Duration::from_secs(900),
        )
        .unwrap();
    Signed {
        keys,
        token,
        sessions,
        users,
        _dir: dir,
    }
}

#[test]
fn a_cached_gatekeeper_check_allocates_nothing() {
    // The proxy's runtime kind; `block_on` polls the check on this thread, where it is counted.
    let rt = tokio::runtime::Runtime::new().unwrap();
    for amr in [&["pwd"][..], &["pwd", "otp"]] {
        let signed = rt.block_on(signed_in(amr));
        let gatekeeper = Gatekeeper::new();
        let check = || {
            let principal = rt
                .block_on(gatekeeper.check(
                    &signed.token,
                    &signed.keys,
                    &*signed.sessions,
                    &*signed.users,
                ))
                .unwrap();
            assert_eq!(principal.email(), "cached@example.com");
            // A route's `max_auth_age`: two numbers compared.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            assert!(portcullis::access::policy::freshness::is_fresh(
                principal.auth_time(),
                600,
                now
            ));
        };
        // The first check fills the caches: it verifies, reads and allocates (the counter works).
        let n = allocations_in(check);
        assert!(n > 0, "{amr:?}: a cold check counted no allocation");
        // The caches' and the runtime's one-time set-up.
        for _ in 0..1_000 {
            check();
        }
        // A cached check allocates nothing. The live-session entry lives under a second, so
        // on a loaded machine a check may find it expired and read (and allocate) afresh:
        // at most once per cache per second passed, where an allocating check path would
        // allocate in all 10,000.
        let started = std::time::Instant::now();
        let allocating = (0..10_000).filter(|_| allocations_in(check) > 0).count() as u64;
        let refills = 2 * (started.elapsed().as_secs() + 1);
        assert!(
            allocating <= refills,
            "{amr:?}: {allocating} of 10,000 cached checks allocated (cache refills allowed: {refills})"
        );
    }
}
