//! Slow, idle and greedy clients on both listeners, over raw sockets: head deadlines, the
//! idle timeout after any answer, per-address and total caps (an idle connection makes room,
//! a busy one does not), and 431/414 for heads over `server.max_header_bytes`.
//!
//! No timed asserts: limits are configured short and each test waits for the server to act,
//! with generous bounds only so that a regression fails instead of hanging.

use std::net::SocketAddr;
use std::time::Duration;

use portcullis::config::{Config, ServerConfig};
use portcullis::server::RunningGateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::*;

/// How long a test waits for the server to do what it must before calling it a failure.
const BOUND: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
enum Listener {
    Main,
    Admin,
}

impl Listener {
    fn addr(self, gw: &RunningGateway) -> SocketAddr {
        match self {
            Listener::Main => gw.addr,
            Listener::Admin => gw.admin_addr,
        }
    }
}

/// A gateway with `/` proxied to `up`, its `[server]` adjusted by `set`.
fn gateway(up: &EchoUpstream, set: impl FnOnce(&mut ServerConfig)) -> (RunningGateway, Scratch) {
    let scratch = Scratch::new();
    let route = format!(
        "[[routes]]\npath_prefix = \"/app\"\nupstream = \"{}\"\npolicy = \"public\"\n",
        up.url()
    );
    let mut config: Config = parse_config(&test_config_text(scratch.dir.path(), &route));
    set(&mut config.server);
    (start_gateway(config), scratch)
}

async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// One answer read off a keep-alive connection: status, head (lower case), body; `None`
/// when the server closed (or reset) it first.
pub(crate) async fn answer(stream: &mut TcpStream) -> Option<(u16, String, String)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(BOUND, stream.read(&mut byte))
            .await
            .expect("an answer or a close in time")
        {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    Some((status, head, String::from_utf8_lossy(&body).into_owned()))
}

/// Whether the server closes `stream` (end or reset) within `wait`; what it sends first is
/// read and dropped.
pub(crate) async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(wait, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: a.example\r\n\r\n")
}

/// A kept-alive connection on `listener` after one answer to `path`.
async fn after_one_answer(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(get(path).as_bytes()).await.unwrap();
    let (status, head, _) = answer(&mut stream).await.expect("an answer");
    assert_eq!(status, 200, "{path}: {head}");
    assert!(head.contains("connection: keep-alive"), "{path}: {head}");
    stream
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_close_after_the_idle_time_whatever_answered_them() {
    let up = EchoUpstream::start().await;
    let (gw, _scratch) = gateway(&up, |s| s.keepalive_timeout = "1s".parse().unwrap());
    // (what answered, listener, path); None: a connection that never sent a byte.
    let cases = [
        ("a local answer", Listener::Main, Some("/health")),
        ("a proxied answer", Listener::Main, Some("/app/x")),
        (
            "a proxied error status",
            Listener::Main,
            Some("/app/status/404"),
        ),
        ("the admin listener", Listener::Admin, Some("/health")),
        ("nothing, main", Listener::Main, None),
        ("nothing, admin", Listener::Admin, None),
    ];
    let mut open = Vec::new();
    for (what, listener, path) in cases {
        let addr = listener.addr(&gw);
        let stream = match path {
            Some(path) if what.contains("error") => {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                stream.write_all(get(path).as_bytes()).await.unwrap();
                let (status, head, _) = answer(&mut stream).await.expect("an answer");
                assert_eq!(status, 404, "{what}: {head}");
                stream
            }
            Some(path) => after_one_answer(addr, path).await,
            None => TcpStream::connect(addr).await.unwrap(),
        };
        open.push((what, stream));
    }
    for (what, mut stream) in open {
        assert!(
            closed_within(&mut stream, BOUND).await,
            "an idle connection after {what} was still open after {BOUND:?}"
        );
    }
    // A connection that speaks again within the idle time is served.
    let mut stream = after_one_answer(gw.addr, "/app/x").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(get("/app/y").as_bytes()).await.unwrap();
    assert_eq!(answer(&mut stream).await.map(|a| a.0), Some(200));
}

#[tokio::test(flavor = "multi_thread")]
async fn trickling_heads_are_cut_off_on_both_listeners_first_request_or_next() {
    let up = EchoUpstream::start().await;
    let (gw, _scratch) = gateway(&up, |s| s.header_read_timeout = "1s".parse().unwrap());
    for listener in [Listener::Main, Listener::Admin] {
        for after_an_answer in [false, true] {
            let addr = listener.addr(&gw);
            let mut stream = if after_an_answer {
                after_one_answer(addr, "/health").await
            } else {
                TcpStream::connect(addr).await.unwrap()
            };
            stream.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
            let mut cut = false;
            for i in 0..50 {
                let line = format!("X-Slow-{i}: 1\r\n");
                if stream.write_all(line.as_bytes()).await.is_err()
                    || closed_within(&mut stream, Duration::from_millis(200)).await
                {
                    cut = true;
                    break;
                }
            }
            assert!(
                cut,
                "{listener:?} (after an answer: {after_an_answer}): a trickling head stayed open"
            );
        }
    }
}

/// A connection that is open and busy: part of a head sent.
async fn busy(source: &str, addr: SocketAddr) -> TcpStream {
    let mut stream = connect_from(source, addr).await;
    stream.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    stream
}

/// Lets the server take in (or let go of) the connections just opened (or dropped) before
/// the next one, so that the order the test means is the order the server sees.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// Whether a new connection from `source` is served.
async fn served(source: &str, addr: SocketAddr) -> bool {
    let mut stream = connect_from(source, addr).await;
    let request = "GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    answer(&mut stream).await.is_some_and(|a| a.0 == 200)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_listener_caps_connections_per_address_and_in_total() {
    let up = EchoUpstream::start().await;
    let (gw, _scratch) = gateway(&up, |s| {
        s.header_read_timeout = "60s".parse().unwrap();
        s.max_connections_per_ip = 2;
        s.max_connections = 3;
        s.admin_max_connections_per_ip = 2;
        s.admin_max_connections = 3;
    });
    for listener in [Listener::Main, Listener::Admin] {
        let addr = listener.addr(&gw);
        let what = format!("{listener:?}");
        // Two busy connections from one address: a third from it is refused.
        let one = ["127.0.0.1"; 3];
        assert_cap(addr, &one, 2, &format!("{what}, per address")).await;
        settle().await;
        // Three from two addresses (none over its own cap): a fourth from a third is refused.
        let three = ["127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.3"];
        assert_cap(addr, &three, 3, &format!("{what}, in total")).await;
        settle().await;
        // Once they have ended, their places are free again.
        let mut freed = false;
        for _ in 0..100 {
            if served("127.0.0.3", addr).await {
                freed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(freed, "{listener:?}: no place was freed");
    }
}

/// Busy connections from each of `sources`, each proven taken in by the server (one whole
/// answer) before the next opens, then left mid-way through a second request's head.
pub(crate) async fn hold(addr: SocketAddr, sources: &[&str]) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for source in sources {
        let mut stream = connect_from(source, addr).await;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let first = answer(&mut stream).await.map(|a| a.0);
        assert_eq!(first, Some(200), "a connection under the cap was refused");
        stream.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
        held.push(stream);
    }
    settle().await;
    held
}

/// With the first `cap` of `sources` holding busy connections, a connection from the next
/// is refused. On a loaded machine a held connection's partial head may still be unread when
/// the newcomer arrives, so the server sees it idle and closes it to make room (as it should):
/// then the round is tried again; a newcomer served while every held connection stays open
/// is a connection over the cap.
pub(crate) async fn assert_cap(addr: SocketAddr, sources: &[&str], cap: usize, what: &str) {
    for _ in 0..10 {
        let mut held = hold(addr, &sources[..cap]).await;
        if !served(sources[cap], addr).await {
            return;
        }
        let mut evicted = false;
        for stream in &mut held {
            evicted |= closed_within(stream, Duration::from_millis(300)).await;
        }
        assert!(
            evicted,
            "{what}: a connection over the cap of {cap} was served"
        );
        drop(held);
        settle().await;
    }
    panic!("{what}: the server never saw the held connections as busy");
}

#[tokio::test(flavor = "multi_thread")]
async fn at_its_cap_an_address_closes_an_idle_connection_to_admit_a_new_one() {
    let up = EchoUpstream::start().await;
    let (gw, _scratch) = gateway(&up, |s| {
        s.header_read_timeout = "60s".parse().unwrap();
        s.max_connections_per_ip = 2;
        s.admin_max_connections_per_ip = 2;
    });
    for listener in [Listener::Main, Listener::Admin] {
        for answered in [true, false] {
            let addr = listener.addr(&gw);
            let what = format!("{listener:?}, idle after an answer: {answered}");
            // Idle: between requests, or never spoke.
            let mut idle = if answered {
                after_one_answer(addr, "/health").await
            } else {
                TcpStream::connect(addr).await.unwrap()
            };
            let mut working = busy("127.0.0.1", addr).await;
            settle().await;
            assert!(
                served("127.0.0.1", addr).await,
                "{what}: the newcomer was refused"
            );
            assert!(
                closed_within(&mut idle, BOUND).await,
                "{what}: the idle one stayed"
            );
            // The busy one was not touched: it finishes its request.
            working.write_all(b"Host: a\r\n\r\n").await.unwrap();
            assert_eq!(answer(&mut working).await.map(|a| a.0), Some(200), "{what}");
            drop(working);
            settle().await;
        }
    }
    // With nothing idle, the newcomer is the one refused.
    assert_cap(gw.addr, &["127.0.0.1"; 3], 2, "nothing idle").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heads_over_the_limit_are_answered_431_or_414_then_closed() {
    let up = EchoUpstream::start().await;
    let (gw, _scratch) = gateway(&up, |s| s.max_header_bytes = 4096);
    let fields = |n: usize, each: usize| {
        (0..n)
            .map(|i| format!("X-F{i}: {}\r\n", "v".repeat(each)))
            .collect::<String>()
    };
    // (what, request-line target, header fields, expected status)
    let cases = [
        (
            "one large field",
            "/health".to_string(),
            fields(1, 5000),
            431,
        ),
        ("many fields", "/health".to_string(), fields(100, 60), 431),
        (
            "more fields than a parser takes",
            "/health".to_string(),
            fields(300, 1),
            431,
        ),
        (
            "a long request-line",
            format!("/health?{}", "q".repeat(5000)),
            String::new(),
            414,
        ),
        (
            "just under the limit",
            "/health".to_string(),
            fields(1, 3900),
            200,
        ),
    ];
    for listener in [Listener::Main, Listener::Admin] {
        for after_an_answer in [false, true] {
            for (what, target, fields, expected) in &cases {
                let addr = listener.addr(&gw);
                let what = format!("{listener:?}, {what}, after an answer: {after_an_answer}");
                let mut stream = if after_an_answer {
                    after_one_answer(addr, "/health").await
                } else {
                    TcpStream::connect(addr).await.unwrap()
                };
                let head = format!("GET {target} HTTP/1.1\r\nHost: a.example\r\n{fields}\r\n");
                let _ = stream.write_all(head.as_bytes()).await;
                let (status, head, body) = answer(&mut stream).await.expect(&what);
                assert_eq!(status, *expected, "{what}: {head}");
                if *expected == 200 {
                    continue;
                }
                assert!(head.contains("connection: close"), "{what}: {head}");
                let code = if *expected == 431 {
                    "header_too_large"
                } else {
                    "uri_too_long"
                };
                assert!(body.contains(code), "{what}: {body}");
                assert!(closed_within(&mut stream, BOUND).await, "{what}: left open");
            }
        }
    }
}

/// Sends `requests` in one write (one packet, as a pipelining client does) and reads as
/// many answers, in order; `None` for each the server closed before.
async fn pipelined(
    addr: SocketAddr,
    requests: &[String],
) -> (TcpStream, Vec<Option<(u16, String, String)>>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(requests.concat().as_bytes())
        .await
        .unwrap();
    let mut answers = Vec::new();
    for _ in requests {
        answers.push(answer(&mut stream).await);
    }
    (stream, answers)
}

/// A request with a header field of `size` bytes: over `max_header_bytes = 4096` at 5000.
fn oversized(path: &str, size: usize) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: a.example\r\nX-Big: {}\r\n\r\n",
        "v".repeat(size)
    )
}

/// RFC 9112 §9.3.2: requests sent before the previous answer are answered in order, each as
/// if sent alone, on both listeners, answered locally or proxied, after a body of either
/// framing; a head over the limit among them is answered 431 after those before it.
#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_answered_in_order_and_an_oversize_one_gets_431() {
    let up = EchoUpstream::start().await;
    let (gw, _scratch) = gateway(&up, |s| s.max_header_bytes = 4096);
    let post = |path: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: a.example\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let chunked = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n\
             5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
    };
    // (what, listener, requests, expected (status, upstream path or body) per answer);
    // "" where the answer is local.
    type Case = (
        &'static str,
        Listener,
        Vec<String>,
        Vec<(u16, &'static str)>,
    );
    let cases: Vec<Case> = vec![
        (
            "two local",
            Listener::Main,
            vec![get("/health"), get("/nowhere")],
            vec![(200, ""), (404, "")],
        ),
        (
            "three local",
            Listener::Main,
            vec![get("/nowhere"), get("/health"), get("/nowhere")],
            vec![(404, ""), (200, ""), (404, "")],
        ),
        (
            "two proxied",
            Listener::Main,
            vec![get("/app/1"), get("/app/2")],
            vec![(200, "/app/1"), (200, "/app/2")],
        ),
        (
            "three, proxied and local",
            Listener::Main,
            vec![get("/app/1"), get("/health"), get("/app/3")],
            vec![(200, "/app/1"), (200, ""), (200, "/app/3")],
        ),
        (
            "after a body by length",
            Listener::Main,
            vec![post("/app/p", "hello"), get("/app/2"), post("/app/q", "")],
            vec![(200, "hello"), (200, "/app/2"), (200, "/app/q")],
        ),
        (
            "after a chunked body",
            Listener::Main,
            vec![chunked("/app/c"), get("/app/2")],
            vec![(200, "hello world"), (200, "/app/2")],
        ),
        (
            "two, admin",
            Listener::Admin,
            vec![get("/health"), get("/nowhere")],
            vec![(200, ""), (404, "")],
        ),
        (
            "three, admin",
            Listener::Admin,
            vec![get("/nowhere"), get("/health"), get("/health")],
            vec![(404, ""), (200, ""), (200, "")],
        ),
        (
            "local, then oversize",
            Listener::Main,
            vec![get("/health"), oversized("/health", 5000)],
            vec![(200, ""), (431, "")],
        ),
        (
            "proxied, then oversize",
            Listener::Main,
            vec![get("/app/1"), oversized("/app/2", 5000)],
            vec![(200, "/app/1"), (431, "")],
        ),
        (
            "two, then oversize",
            Listener::Main,
            vec![
                get("/app/1"),
                post("/app/p", "body"),
                oversized("/app/3", 5000),
            ],
            vec![(200, "/app/1"), (200, "body"), (431, "")],
        ),
        (
            "admin, then oversize",
            Listener::Admin,
            vec![get("/health"), oversized("/health", 5000)],
            vec![(200, ""), (431, "")],
        ),
        (
            "admin, two then oversize",
            Listener::Admin,
            vec![get("/health"), get("/nowhere"), oversized("/health", 5000)],
            vec![(200, ""), (404, ""), (431, "")],
        ),
    ];
    for (what, listener, requests, expected) in cases {
        let (mut stream, answers) = pipelined(listener.addr(&gw), &requests).await;
        for (i, (answer, (status, seen))) in answers.iter().zip(&expected).enumerate() {
            let (got, head, body) = answer
                .as_ref()
                .unwrap_or_else(|| panic!("{what}: request {i} not answered"));
            assert_eq!(got, status, "{what}: request {i}: {head}{body}");
            if seen.starts_with('/') {
                let echo: serde_json::Value = serde_json::from_str(body).unwrap();
                assert_eq!(echo["path"], *seen, "{what}: request {i}: {body}");
            } else if !seen.is_empty() {
                let echo: serde_json::Value = serde_json::from_str(body).unwrap();
                assert_eq!(echo["body"], *seen, "{what}: request {i}: {body}");
            }
        }
        if expected.last().is_some_and(|(status, _)| *status == 431) {
            assert!(
                closed_within(&mut stream, BOUND).await,
                "{what}: left open after 431"
            );
        } else {
            // Still kept alive, for the next request.
            stream.write_all(get("/health").as_bytes()).await.unwrap();
            assert_eq!(answer(&mut stream).await.map(|a| a.0), Some(200), "{what}");
        }
    }
}

/// At the total cap the connection idle the longest makes room: by when it last became idle
/// (its answer, or its opening if it never spoke), not by when it opened nor by address.
#[tokio::test(flavor = "multi_thread")]
async fn at_the_total_cap_the_connection_idle_longest_is_closed() {
    let up = EchoUpstream::start().await;
    let (gw, _scratch) = gateway(&up, |s| {
        s.header_read_timeout = "60s".parse().unwrap();
        s.max_connections = 8;
        s.admin_max_connections = 8;
    });
    // (what, listener, whether each spoke once on opening, which ones speak again afterwards
    // (in that order), the one expected closed)
    let cases: [(&str, Listener, bool, &[usize], usize); 6] = [
        ("in the order opened", Listener::Main, true, &[], 0),
        ("the oldest spoke again", Listener::Main, true, &[0], 1),
        (
            "the two oldest spoke again",
            Listener::Main,
            true,
            &[1, 0],
            2,
        ),
        (
            "the oldest spoke last",
            Listener::Main,
            true,
            &[3, 5, 1, 0, 2],
            4,
        ),
        ("never spoke", Listener::Main, false, &[], 0),
        (
            "admin, the oldest spoke again",
            Listener::Admin,
            true,
            &[0, 2],
            1,
        ),
    ];
    for (what, listener, spoke, again, expected) in cases {
        let addr = listener.addr(&gw);
        let mut open = Vec::new();
        for i in 0..8 {
            let mut stream = connect_from(&format!("127.0.0.{}", i + 2), addr).await;
            if spoke {
                stream.write_all(get("/health").as_bytes()).await.unwrap();
                assert_eq!(answer(&mut stream).await.map(|a| a.0), Some(200), "{what}");
            }
            open.push(stream);
            settle().await;
        }
        for &i in again {
            open[i].write_all(get("/health").as_bytes()).await.unwrap();
            assert_eq!(answer(&mut open[i]).await.map(|a| a.0), Some(200), "{what}");
            settle().await;
        }
        assert!(
            served("127.0.0.20", addr).await,
            "{what}: the newcomer was refused"
        );
        assert!(
            closed_within(&mut open[expected], BOUND).await,
            "{what}: connection {expected} stayed open"
        );
        // Every other one is still served.
        for (i, stream) in open.iter_mut().enumerate().filter(|(i, _)| *i != expected) {
            stream.write_all(get("/health").as_bytes()).await.unwrap();
            assert_eq!(
                answer(stream).await.map(|a| a.0),
                Some(200),
                "{what}: connection {i} was closed instead of {expected}"
            );
        }
        drop(open);
        settle().await;
    }
}

/// RFC 9112 §2.2: a few empty lines before a request-line are ignored; a "head" of nothing
/// but empty lines is not a request (400), not an over-long request-line (414).
#[tokio::test(flavor = "multi_thread")]
async fn empty_lines_before_a_request_are_ignored_up_to_a_few() {
    let up = EchoUpstream::start().await;
    let (gw, _scratch) = gateway(&up, |s| s.max_header_bytes = 4096);
    let cases = [
        ("one empty line", "\r\n".to_string(), 200),
        ("32 empty lines (64 bytes)", "\r\n".repeat(32), 200),
        ("bare LFs", "\n".repeat(10), 200),
        ("33 empty lines", "\r\n".repeat(33), 400),
        ("5000 bytes of empty lines", "\r\n".repeat(2500), 400),
        ("5000 bare LFs", "\n".repeat(5000), 400),
    ];
    for listener in [Listener::Main, Listener::Admin] {
        for (what, blank, expected) in &cases {
            let what = format!("{listener:?}, {what}");
            let mut stream = TcpStream::connect(listener.addr(&gw)).await.unwrap();
            let request = format!("{blank}{}", get("/health"));
            let _ = stream.write_all(request.as_bytes()).await;
            let (status, head, body) = answer(&mut stream).await.expect(&what);
            assert_eq!(status, *expected, "{what}: {head}{body}");
            if *expected == 400 {
                assert!(body.contains("bad_request"), "{what}: {body}");
                assert!(closed_within(&mut stream, BOUND).await, "{what}: left open");
            }
        }
    }
}
