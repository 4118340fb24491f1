//! The proxy's per-request decision allocates nothing for an already-canonical request:
//! counted by a global allocator around the same calls the proxy makes.
//!
//! A test binary of its own: the counting allocator is process-wide, so in a shared binary
//! it would slow every other test and count their threads' allocations as this one's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use portcullis::config::Config;
use portcullis::gateway::canonical::canonicalize;
use portcullis::gateway::forwarding::{self, ProxyHeaders};
use portcullis::gateway::routes::RouteTable;
use portcullis::metrics::Metrics;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    f();
    ALLOCATIONS.load(Ordering::Relaxed) - before
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
    "#;
    let config = Config::load_from(Path::new("t.toml"), text, Vec::new()).unwrap();
    let table = RouteTable::from_config(&config, &Metrics::new()).unwrap();
    let proxy_headers = ProxyHeaders::new(&config.server.proxy_headers);
    let mut headers = http::HeaderMap::new();
    headers.insert("host", http::HeaderValue::from_static("app.example:8080"));
    headers.insert("user-agent", http::HeaderValue::from_static("curl/8"));
    headers.insert("accept", http::HeaderValue::from_static("*/*"));
    headers.insert("cookie", http::HeaderValue::from_static("theme=dark"));

    let decide = |target: &'static str| {
        let request = canonicalize(
            &http::Method::GET,
            http::Version::HTTP_11,
            target.as_bytes(),
            &headers,
            None,
        )
        .unwrap();
        let route = table
            .route_for(request.host.as_deref(), &request.path, request.flags)
            .unwrap();
        assert!(route.is_some());
        assert!(!request.target_changed && !request.host_changed);
        let removed = forwarding::names_matching(&headers, |n| proxy_headers.matches(n));
        assert!(removed.is_empty());
        assert_eq!(
            forwarding::cookies_without_credentials(&headers, |t| t.contains("..")),
            None
        );
        assert!(!forwarding::must_remove_authorization(
            &headers,
            false,
            |_| true
        ));
    };
    // Warm up whatever is lazily initialised.
    decide("/app/items/42?x=1");
    for target in [
        "/app/items/42?x=1",
        "/",
        "/static/a.b-c_d~e/",
        "/app?q=%2F..%2F",
    ] {
        let n = allocations_in(|| decide(target));
        assert_eq!(n, 0, "{target} allocated {n} times");
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
