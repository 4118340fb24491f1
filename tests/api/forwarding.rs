//! What crosses the gateway besides the path: forwarding headers only a trusted proxy may
//! set, the gateway's own credentials, message framing, and slow or greedy clients.
//! Spoken over raw sockets where an HTTP client would tidy the request up.

use std::time::{Duration, Instant};

use crate::support::app::*;
use crate::support::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `request` as it is on a new connection and reads the answer until the gateway
/// closes it (requests carry `Connection: close`). Returns the status and the body.
async fn raw(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // A refused connection may be closed before all is sent, or reset: that is an answer.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answer in time");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

fn public_route(prefix: &str, upstream: &str, extra: &str) -> String {
    format!(
        "[[routes]]\npath_prefix = \"{prefix}\"\nupstream = \"{upstream}\"\npolicy = \"public\"\n{extra}\n"
    )
}

async fn gateway(extra: &str) -> (portcullis::server::RunningGateway, Scratch) {
    let scratch = Scratch::new();
    let config = parse_config(&test_config_text(scratch.dir.path(), extra));
    (start_gateway(config), scratch)
}

/// Every spelling of every header only a trusted hop may set, with a value the upstream
/// must never see.
const SPOOFED: &[&str] = &[
    "Forwarded: for=6.6.6.6;proto=https;host=evil.example",
    "X-Forwarded-For: 6.6.6.6",
    "X_Forwarded_For: 6.6.6.7",
    "X-Forwarded-Host: evil.example",
    "x_forwarded_host: evil2.example",
    "X-Forwarded-Proto: https",
    "X-Forwarded-Prefix: /admin",
    "X-Forwarded-Port: 443",
    "X-Forwarded-Server: evil.example",
    "X-Real-IP: 6.6.6.8",
    "X_Real_IP: 6.6.6.9",
    "X-Original-URL: /admin/secret",
    "X-Rewrite-URL: /admin/secret",
    "x_rewrite_url: /admin/secret2",
    "X-Original-URI: /admin/secret",
    "X-Original-Host: evil.example",
    "True-Client-IP: 6.6.6.10",
    "X-Client-IP: 6.6.6.11",
    "CF-Connecting-IP: 6.6.6.12",
    "X-HTTP-Method-Override: DELETE",
];

#[tokio::test(flavor = "multi_thread")]
async fn clients_cannot_set_what_only_a_trusted_proxy_may() {
    let up = EchoUpstream::start().await;
    let (gw, _s) = gateway(&public_route("/", &up.url(), "")).await;
    let mut request = String::from("GET /x HTTP/1.1\r\nHost: app.example:8080\r\n");
    for line in SPOOFED {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("Connection: close\r\n\r\n");
    let (status, body) = raw(gw.addr, &request).await;
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    let headers = echo["headers"].as_array().unwrap();
    for (name, value) in headers
        .iter()
        .map(|h| (h[0].as_str().unwrap(), h[1].as_str().unwrap()))
    {
        assert!(
            !value.contains("6.6.6") && !value.contains("evil") && !value.contains("/admin"),
            "the upstream received {name}: {value}"
        );
        assert!(
            ![
                "forwarded",
                "x-original-url",
                "x-rewrite-url",
                "x-http-method-override"
            ]
            .contains(&name.to_ascii_lowercase().replace('_', "-").as_str()),
            "the upstream received {name}"
        );
    }
    assert_eq!(echoed_header(&echo, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(echoed_header(&echo, "x-real-ip"), ["127.0.0.1"]);
    assert_eq!(echoed_header(&echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(
        echoed_header(&echo, "x-forwarded-host"),
        ["app.example:8080"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_proxy_speaks_for_the_client_across_header_lines() {
    let up = EchoUpstream::start().await;
    let extra = format!("{}\n", public_route("/", &up.url(), ""));
    let scratch = Scratch::new();
    let mut config = parse_config(&test_config_text(scratch.dir.path(), &extra));
    config.server.trusted_proxies = vec![
        "127.0.0.1/32".parse().unwrap(),
        "192.0.2.0/24".parse().unwrap(),
    ];
    let gw = start_gateway(config);
    // HAProxy appends a line per hop: the lines are one list, read from the last back.
    let request = "GET /x HTTP/1.1\r\nHost: app.example\r\n\
                   X-Forwarded-For: 203.0.113.1, 198.51.100.7\r\n\
                   X-Forwarded-For: 192.0.2.9\r\n\
                   X-Forwarded-Proto: https\r\n\
                   X-Forwarded-Host: www.example\r\n\
                   Forwarded: for=198.51.100.7\r\n\
                   X-Original-URL: /admin\r\n\
                   X-HTTP-Method-Override: DELETE\r\n\
                   Remote-User: admin\r\n\
                   Remote-Uid: 0\r\n\
                   X-Remote-Group: system:masters\r\n\
                   X-Remote-Extra-Scopes: all\r\n\
                   X_Remote_Group: system:masters\r\n\
                   Connection: close\r\n\r\n";
    let (status, body) = raw(gw.addr, request).await;
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        echoed_header(&echo, "x-forwarded-for"),
        ["203.0.113.1, 198.51.100.7, 192.0.2.9, 127.0.0.1"]
    );
    assert_eq!(echoed_header(&echo, "x-real-ip"), ["198.51.100.7"]);
    assert_eq!(echoed_header(&echo, "x-forwarded-proto"), ["https"]);
    // The host the policy checked, not the one a proxy claims.
    assert_eq!(echoed_header(&echo, "x-forwarded-host"), ["app.example"]);
    assert_eq!(echoed_header(&echo, "forwarded"), ["for=198.51.100.7"]);
    // Rewrite, method-override and other proxies' identity headers go, whoever sent them.
    for name in [
        "x-original-url",
        "x-http-method-override",
        "remote-user",
        "remote-uid",
        "x-remote-group",
        "x-remote-extra-scopes",
        "X_Remote_Group",
    ] {
        assert!(
            echoed_header(&echo, name).is_empty(),
            "{name} reached the upstream"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateways_credentials_stay_at_the_gateway() {
    for backend in backends() {
        let open = EchoUpstream::start().await;
        let app_up = EchoUpstream::start().await;
        let keep = EchoUpstream::start().await;
        let routes = format!(
            "{}{}[[routes]]\npath_prefix = \"/app\"\nupstream = \"{}\"\npolicy = \"authenticated\"\n",
            public_route("/", &open.url(), ""),
            public_route("/keep", &keep.url(), "forward_authorization = true"),
            app_up.url()
        );
        let app = TestApp::spawn(backend, &routes).await;
        app.verified_user("cred@example.com").await;
        let tokens = app.login("cred@example.com").await;
        let token = tokens.access.clone();
        let refresh = tokens.refresh.clone();

        for (path, name) in [
            ("/app/x", "portcullis"),
            ("/x", "__Host-portcullis"),
            ("/keep/x", "Portcullis"),
        ] {
            // Bearer and cookie together; neither may reach any upstream. (One copy of the
            // cookie: a request with two is refused, `cookies::`.)
            let r = app
                .http
                .get(app.url(path))
                .bearer_auth(&token)
                .header("cookie", format!("theme=dark; {name}={token}; lang=ru"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path}");
            let echo: Value = r.json().await.unwrap();
            assert!(
                echoed_header(&echo, "authorization").is_empty(),
                "{path}: {echo}"
            );
            assert_eq!(
                echoed_header(&echo, "cookie"),
                ["theme=dark; lang=ru"],
                "{path}"
            );
            assert!(
                !echo.to_string().contains(&token),
                "{path}: the token leaked"
            );

            // The cookie alone still authenticates, and still stays here.
            let r = app
                .http
                .get(app.url(path))
                .header("cookie", format!("portcullis={token}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path}");
            let echo: Value = r.json().await.unwrap();
            assert!(echoed_header(&echo, "cookie").is_empty(), "{path}: {echo}");
        }

        // However the token is wrapped, it does not leave with the client's own credentials.
        let basic = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(format!("user:{token}"))
        };
        for wrapped in [
            format!("Bearer\t{token}"),
            token.clone(),
            format!("Token {token}"),
            format!("Bearer x, Bearer {token}"),
            format!("Bearer \"{token}\""),
            format!("Basic {basic}"),
        ] {
            let r = app
                .http
                .get(app.url("/keep/x"))
                .header("authorization", &wrapped)
                .send()
                .await
                .unwrap();
            let echo: Value = r.json().await.unwrap();
            assert!(
                !echo.to_string().contains(&token),
                "{wrapped:?} leaked the token"
            );
        }
        for cookie in [
            format!("a=1, portcullis={token}"),
            format!("PORTCULLIS={token}; k=v"),
            format!("__Secure-portcullis={token}"),
            format!("portcullis;={token}"),
            format!("other={token}"),
            format!("x={}", token.replace('.', "%2E")),
            format!("keep=1; refresh_token={refresh}"),
        ] {
            let r = app
                .http
                .get(app.url("/x"))
                .header("cookie", &cookie)
                .header("cookie2", format!("$Version=1; portcullis={token}"))
                .send()
                .await
                .unwrap();
            let echo: Value = r.json().await.unwrap();
            let seen = echo.to_string();
            assert!(
                !seen.contains(&token) && !seen.contains(&refresh) && !seen.contains("%2E"),
                "{cookie:?} leaked a token: {seen}"
            );
        }

        // A client's own credentials: dropped by default, kept where the route says so.
        for (path, forwarded) in [("/x", false), ("/keep/x", true)] {
            for credentials in ["Basic dXNlcjpwYXNz", "Bearer someone-elses-token"] {
                let r = app
                    .http
                    .get(app.url(path))
                    .header("authorization", credentials)
                    .send()
                    .await
                    .unwrap();
                let echo: Value = r.json().await.unwrap();
                let seen = echoed_header(&echo, "authorization");
                if forwarded {
                    assert_eq!(seen, [credentials], "{path}");
                } else {
                    assert!(seen.is_empty(), "{path}: {seen:?}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn framing_an_upstream_could_read_otherwise_is_refused() {
    let up = EchoUpstream::start().await;
    let (gw, _s) = gateway(&public_route("/", &up.url(), "")).await;
    for lengths in [
        "Content-Length: 5, 5\r\n",
        "Content-Length: 5,5\r\n",
        "Content-Length: 5\r\nContent-Length: 5\r\n",
        "Content-Length: +5\r\n",
        "Content-Length: 05\r\nContent-Length: 5\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: identity, chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    ] {
        let request = format!(
            "POST /x HTTP/1.1\r\nHost: a.example\r\n{lengths}Connection: close\r\n\r\nhello"
        );
        let (status, body) = raw(gw.addr, &request).await;
        assert_eq!(status, 400, "{lengths:?} was answered {status}: {body}");
    }
    // One plain length passes, body and all.
    let request = "POST /x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let (status, body) = raw(gw.addr, request).await;
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["body"], "hello");
    assert_eq!(echoed_header(&echo, "content-length"), ["5"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_is_answered_by_the_gateway_not_echoed_by_an_upstream() {
    let up = EchoUpstream::start().await;
    let (gw, _s) = gateway(&public_route("/", &up.url(), "")).await;
    for method in ["TRACE", "TRACK", "trace", "Track"] {
        let (status, body) = raw(
            gw.addr,
            &format!("{method} /x HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 405, "{method}: {body}");
        assert!(body.contains("method_not_allowed"), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn options_asterisk_is_answered_by_the_gateway() {
    let up = EchoUpstream::start().await;
    let (gw, _s) = gateway(&public_route("/", &up.url(), "")).await;
    let (status, _) = raw(
        gw.addr,
        "OPTIONS * HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = raw(
        gw.addr,
        "GET * HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{body}");
}

/// Whether the server closed `stream` (EOF or reset) rather than leaving it open.
async fn closed_by_server(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408/400 answer before the close is fine; keep reading to the close.
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_head_that_trickles_in_is_cut_off_while_others_are_served() {
    let up = EchoUpstream::start().await;
    let extra = format!("{}\n", public_route("/", &up.url(), ""));
    let scratch = Scratch::new();
    let mut config = parse_config(&test_config_text(scratch.dir.path(), &extra));
    config.server.header_read_timeout = "1s".parse().unwrap();
    let gw = start_gateway(config);

    // Twenty slow clients, each sending a header line every 300 ms for up to 6 s.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let addr = gw.addr;
        slow.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: a.example\r\n")
                .await
                .unwrap();
            let started = Instant::now();
            for i in 0..20 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if stream
                    .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return (true, started.elapsed());
                }
                if closed_by_server(&mut stream, Duration::from_millis(1)).await {
                    return (true, started.elapsed());
                }
            }
            (false, started.elapsed())
        }));
    }
    // Meanwhile everyone else is served.
    let c = client();
    for _ in 0..5 {
        let r = c.get(format!("{}/health", gw.url())).send().await.unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for task in slow {
        let (cut, after) = task.await.unwrap();
        assert!(
            cut,
            "a trickling request head was still open after {after:?}"
        );
    }

    // Empty lines before a request-line neither end a head nor keep it open for ever.
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let mut cut = false;
    for _ in 0..20 {
        if stream.write_all(b"\r\n").await.is_err()
            || closed_by_server(&mut stream, Duration::from_millis(300)).await
        {
            cut = true;
            break;
        }
    }
    assert!(
        cut,
        "empty lines kept a connection open past the head deadline"
    );

    // A head larger than max_header_bytes is cut off too.
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a.example\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let _ = stream.write_all(big.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(
        !String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "a 100 kB head was served"
    );

    // The clock starts at a request's first byte: an idle keep-alive connection is not
    // on it, and its next request is served.
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 2048];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(
        String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 200"),
        "an idle keep-alive connection was cut: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_address_cannot_hold_more_than_its_share_of_connections() {
    let up = EchoUpstream::start().await;
    let extra = public_route("/", &up.url(), "");
    for trusted in [false, true] {
        let scratch = Scratch::new();
        let mut config = parse_config(&test_config_text(scratch.dir.path(), &extra));
        config.server.max_connections_per_ip = 3;
        if trusted {
            config.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        }
        let gw = start_gateway(config);
        // Three busy connections from one address: a fourth is refused, unless the address
        // is a trusted proxy's.
        if trusted {
            let _held = crate::connections::hold(gw.addr, &["127.0.0.1"; 3]).await;
            let (status, _) = raw(
                gw.addr,
                "GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            )
            .await;
            assert_eq!(status, 200, "a trusted proxy's connections are not capped");
            continue;
        }
        crate::connections::assert_cap(gw.addr, &["127.0.0.1"; 4], 3, "per address").await;
        // Once they have ended, a place is free again.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, _) = raw(
                gw.addr,
                "GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            )
            .await;
            if status == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "no place was freed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
