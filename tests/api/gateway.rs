//! End-to-end: the real gateway in front of a real echo upstream, spoken to over HTTP.

use std::time::Duration;

use crate::support::disk::SmallDisk;
use crate::support::*;
use serde_json::Value;

async fn gateway_with_routes(routes: &str) -> (portcullis::server::RunningGateway, Scratch) {
    let scratch = Scratch::new();
    let config = parse_config(&test_config_text(scratch.dir.path(), routes));
    (start_gateway(config), scratch)
}

fn public_route(name: &str, prefix: &str, upstream: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\nupstream = \"{upstream}\"\npolicy = \"public\"\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn longest_prefix_picks_the_upstream() {
    let root = EchoUpstream::start().await;
    let api = EchoUpstream::start().await;
    let routes =
        public_route("root", "/", &root.url()) + &public_route("api", "/service", &api.url());
    let (gw, _s) = gateway_with_routes(&routes).await;
    let c = client();

    let r = c
        .get(format!("{}/service/items", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["path"], "/service/items");
    assert_eq!(echoed_header(&echo, "host").len(), 1);

    // Segment boundary: /services is not under /service.
    let r = c
        .get(format!("{}/services", gw.url()))
        .send()
        .await
        .unwrap();
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["path"], "/services");
    let via_root = c.get(format!("{}/other", gw.url())).send().await.unwrap();
    assert_eq!(via_root.status(), 200);

    // Which upstream answered: compare the X-Forwarded-Host path through both and the
    // metrics route labels.
    metrics_containing(
        &gw.admin_url(),
        &[
            "portcullis_http_requests_total{route=\"api\",status=\"200\"} 1",
            "portcullis_http_requests_total{route=\"root\",status=\"200\"} 2",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn host_routes_win_over_catch_all() {
    let docs = EchoUpstream::start().await;
    let root = EchoUpstream::start().await;
    let routes = format!(
        "{}[[routes]]\nname = \"docs\"\nhost = \"docs.example.test\"\npath_prefix = \"/\"\nupstream = \"{}\"\npolicy = \"public\"\n",
        public_route("root", "/", &root.url()),
        docs.url()
    );
    let (gw, _s) = gateway_with_routes(&routes).await;
    let c = client();
    c.get(format!("{}/x", gw.url()))
        .header("host", "docs.example.test")
        .send()
        .await
        .unwrap();
    c.get(format!("{}/x", gw.url()))
        .header("host", "other.example.test")
        .send()
        .await
        .unwrap();
    metrics_containing(
        &gw.admin_url(),
        &[
            "route=\"docs\",status=\"200\"} 1",
            "route=\"root\",status=\"200\"} 1",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn method_path_query_body_and_status_pass_through() {
    let up = EchoUpstream::start().await;
    let (gw, _s) = gateway_with_routes(&public_route("app", "/", &up.url())).await;
    let c = client();

    let r = c
        .put(format!("{}/things/42?x=1&y=%20z", gw.url()))
        .header("content-type", "text/plain")
        .header("x-custom", "kept")
        .body("hello body")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-upstream"], "echo");
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/things/42");
    assert_eq!(echo["query"], "x=1&y=%20z");
    assert_eq!(echo["body"], "hello body");
    assert_eq!(echoed_header(&echo, "x-custom"), vec!["kept"]);
    assert_eq!(echoed_header(&echo, "x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(echoed_header(&echo, "x-forwarded-proto"), vec!["http"]);

    for code in [201u16, 404, 418, 500, 503] {
        let r = c
            .delete(format!("{}/status/{code}", gw.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), code);
        assert_eq!(
            r.headers()["x-upstream"],
            "echo",
            "status {code} came from the upstream"
        );
    }

    let big = "x".repeat(256 * 1024);
    let r = c
        .post(format!("{}/upload", gw.url()))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    let echo: Value = r.json().await.unwrap();
    assert_eq!(
        echo["body"].as_str().map(str::len),
        Some(big.len()),
        "proxied bodies are not capped"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unmatched_path_is_a_404_envelope_and_keeps_the_connection() {
    let up = EchoUpstream::start().await;
    let (gw, _s) = gateway_with_routes(&public_route("app", "/app", &up.url())).await;

    // One raw connection, two requests: the 404 must not close it.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    for _ in 0..2 {
        stream
            .write_all(b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 404"), "{text}");
        assert!(text.contains("\"code\":\"not_found\""), "{text}");
        assert!(
            !text.to_ascii_lowercase().contains("connection: close"),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_is_502_and_slow_upstream_is_504() {
    let dead_port = free_port();
    let up = EchoUpstream::start().await;
    let routes = public_route("dead", "/dead", &format!("http://127.0.0.1:{dead_port}"))
        + &public_route("slow", "/", &up.url());
    let (gw, _s) = gateway_with_routes(&routes).await;
    let c = client();

    let r = c.get(format!("{}/dead/x", gw.url())).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.headers()["connection"],
        "close",
        "the socket is not reused after a proxy failure, so it must not be pooled"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["success"], false);
    assert_eq!(body["code"], "upstream_unavailable");

    // upstream_timeout is 2s in the test config.
    let r = c
        .get(format!("{}/slow/4000", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "upstream_timeout");

    metrics_containing(
        &gw.admin_url(),
        &[
            "portcullis_upstream_errors_total{kind=\"connect\",route=\"dead\"} 1",
            "portcullis_upstream_errors_total{kind=\"timeout\",route=\"slow\"} 1",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_answers_on_both_listeners_with_security_headers() {
    let (gw, _s) = gateway_with_routes("").await;
    let c = client();
    for base in [gw.url(), gw.admin_url()] {
        let r = c.get(format!("{base}/health")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let h = r.headers().clone();
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert!(h.contains_key("content-security-policy"));
        assert!(
            !h.contains_key("server"),
            "no version-revealing Server header"
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], "ok");
        assert!(body["checks"].is_object());
    }
    for base in [gw.url(), gw.admin_url()] {
        let r = c.post(format!("{base}/health")).send().await.unwrap();
        assert_eq!(r.status(), 405, "{base}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_only_on_the_admin_listener() {
    let up = EchoUpstream::start().await;
    let (gw, _s) = gateway_with_routes(&public_route("app", "/app", &up.url())).await;
    let c = client();
    c.get(format!("{}/app/1", gw.url())).send().await.unwrap();

    let r = c.get(format!("{}/metrics", gw.url())).send().await.unwrap();
    assert_eq!(
        r.status(),
        404,
        "/metrics must not leak on the main listener"
    );

    let r = c
        .get(format!("{}/metrics", gw.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    metrics_containing(
        &gw.admin_url(),
        &[
            "portcullis_http_requests_total{route=\"app\",status=\"200\"} 1",
            "portcullis_http_request_duration_seconds_bucket{route=\"app\"",
            "portcullis_upstream_duration_seconds_bucket{route=\"app\"",
            "portcullis_http_requests_in_flight",
            "portcullis_http_requests_total{route=\"unmatched\",status=\"404\"} 1",
        ],
    )
    .await;
    let r = c
        .post(format!("{}/metrics", gw.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test(flavor = "multi_thread")]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let up = EchoUpstream::start().await;
    let (gw, _s) = gateway_with_routes(&public_route("app", "/", &up.url())).await;
    let r = client()
        .get(format!("{}/p", gw.url()))
        .header("X-User-Id", "admin")
        .header("x-user-id", "admin2")
        .header("X_USER_EMAIL", "boss@example.com")
        .header("x-user-roles", "admin")
        .header("X-Session-Id", "s")
        .header("x-identity-assertion", "forged")
        .send()
        .await
        .unwrap();
    let echo: Value = r.json().await.unwrap();
    for name in [
        "x-user-id",
        "x_user_email",
        "x-user-email",
        "x-user-roles",
        "x-session-id",
        "x-identity-assertion",
    ] {
        assert!(
            echoed_header(&echo, name).is_empty(),
            "{name} reached the upstream: {echo}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn in_flight_gauge_returns_to_zero() {
    let up = EchoUpstream::start().await;
    let (gw, _s) = gateway_with_routes(&public_route("app", "/", &up.url())).await;
    let c = client();
    let slow = tokio::spawn({
        let url = format!("{}/slow/700", gw.url());
        let c = c.clone();
        async move { c.get(url).send().await.unwrap().status() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    metrics_containing(&gw.admin_url(), &["portcullis_http_requests_in_flight 1"]).await;
    assert_eq!(slow.await.unwrap(), 200);
    metrics_containing(&gw.admin_url(), &["portcullis_http_requests_in_flight 0"]).await;
}

/// A full disk under the log directory or the mail outbox makes `/health` say so (503,
/// degraded, naming the directory's check) before it costs lost lines or a failed
/// registration; freeing space makes it healthy again.
#[tokio::test(flavor = "multi_thread")]
async fn health_reports_a_full_log_or_outbox_directory_as_degraded() {
    let scratch = Scratch::new();
    let Some(disk) = SmallDisk::mount(scratch.path("small"), "64k") else {
        return;
    };
    for (check, adjust) in [
        (
            "log_dir",
            (|c: &mut portcullis::config::Config, dir: &str| {
                c.logging.dir = dir.to_string();
            }) as fn(&mut _, &str),
        ),
        ("mail_outbox", |c, dir| {
            c.mail.url = portcullis::config::MailUrl::File(dir.into());
        }),
    ] {
        let mut config = parse_config(&test_config_text(scratch.dir.path(), ""));
        adjust(&mut config, &disk.path().display().to_string());
        let gw = start_gateway(config);
        let health = || async {
            let r = client()
                .get(format!("{}/health", gw.admin_url()))
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        };
        let (status, body) = health().await;
        assert_eq!(status, 200, "{check}: {body}");
        assert_eq!(body["checks"][check], "ok", "{body}");

        disk.fill();
        let (status, body) = health().await;
        assert_eq!(status, 503, "{check}: {body}");
        assert_eq!(body["status"], "degraded");
        assert_eq!(body["checks"][check]["status"], "down", "{body}");
        let error = body["checks"][check]["error"].as_str().unwrap();
        assert!(error.contains("No space left"), "{error}");

        disk.free();
        let (status, body) = health().await;
        assert_eq!(status, 200, "{check}, space freed: {body}");
    }
}
