//! Micro-benchmarks of the per-request work: canonical request, route match, identity header
//! checks, client IP.

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

use portcullis::access::identity::IdentityHeaderNames;
use portcullis::config::{Config, IdentityHeadersConfig};
use portcullis::gateway::canonical::canonicalize;
use portcullis::gateway::client_ip::client_ip;
use portcullis::gateway::routes::RouteTable;
use portcullis::metrics::Metrics;

fn route_table(n: usize) -> RouteTable {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "[[routes]]\nname = \"r{i}\"\npath_prefix = \"/service{i}/v1\"\nupstream = \"http://127.0.0.1:3000\"\n"
        ));
    }
    text.push_str(
        "[[routes]]\nname = \"root\"\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:3000\"\n",
    );
    let config = Config::load_from(Path::new("bench.toml"), &text, Vec::new()).expect("config");
    RouteTable::from_config(&config, &Metrics::new()).expect("routes")
}

fn bench_route_match(c: &mut Criterion) {
    for n in [4, 64] {
        let table = route_table(n);
        c.bench_function(&format!("route_match/{n}_routes"), |b| {
            b.iter(|| {
                table.find(
                    black_box(Some("app.example.com")),
                    black_box("/service3/v1/items/42"),
                )
            })
        });
    }
}

/// The canonical form of a request as the proxy takes it: an already-canonical target (the
/// common case, borrowed), and one with dot segments, escapes and merged slashes to resolve.
fn bench_canonical_request(c: &mut Criterion) {
    let table = route_table(4);
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::HOST,
        http::HeaderValue::from_static("app.example.com"),
    );
    for (name, target) in [
        ("canonical", "/service3/v1/items/42?page=2"),
        ("resolved", "/service3//v1/./x/../items/%34%32?page=2"),
    ] {
        c.bench_function(&format!("canonical_request/{name}"), |b| {
            b.iter(|| {
                let request = canonicalize(
                    &http::Method::GET,
                    http::Version::HTTP_11,
                    black_box(target.as_bytes()),
                    black_box(&headers),
                    None,
                )
                .expect("valid");
                let route = table
                    .route_for(request.host.as_deref(), &request.path, request.flags)
                    .expect("routable")
                    .map(|r| r.name.len());
                (request.target_changed, route)
            })
        });
    }
}

fn bench_identity_headers(c: &mut Criterion) {
    let names = IdentityHeaderNames::new(&IdentityHeadersConfig::default());
    let headers: Vec<http::HeaderName> = [
        "host",
        "user-agent",
        "accept",
        "accept-encoding",
        "authorization",
        "cookie",
        "x-request-id",
        "x_user_id",
    ]
    .iter()
    .map(|h| http::HeaderName::from_static(h))
    .collect();
    c.bench_function("identity_header_scan/8_headers", |b| {
        b.iter(|| names.spoofed(black_box(headers.iter())))
    });
}

fn bench_client_ip(c: &mut Criterion) {
    let trusted = vec!["10.0.0.0/8".parse().expect("cidr")];
    let peer = "10.1.2.3".parse().expect("ip");
    c.bench_function("client_ip/trusted_chain", |b| {
        b.iter(|| {
            client_ip(
                black_box(peer),
                black_box(["203.0.113.7, 10.0.0.2"].into_iter()),
                &trusted,
            )
        })
    });
}

criterion_group!(
    benches,
    bench_canonical_request,
    bench_route_match,
    bench_identity_headers,
    bench_client_ip
);
criterion_main!(benches);
