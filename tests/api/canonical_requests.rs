//! Canonical request first (DESIGN.md §4): before anything is matched, the request-target and
//! Host are put in one canonical form, routes and the local API see that form, and the upstream
//! receives exactly it. The invariant under test: no request is matched to one route and then
//! resolved by a normalising upstream to a path under another.
//!
//! The rules, from RFC 9112 §3.2 (target forms, Host) and RFC 3986 §6.2.2 / §5.2.4:
//! - origin-form `/…`; absolute-form `http(s)://authority/…` (any case) is routed on its
//!   authority, which replaces Host, and forwarded in origin-form; `*` only with OPTIONS;
//!   anything else (authority-form outside CONNECT, relative references) is a 400;
//! - exactly one Host, required on HTTP/1.1, lower-cased, one trailing dot removed, a port of
//!   digits up to 65535 that is ignored for matching; anything else is a 400;
//! - the path has its unreserved characters percent-decoded and the remaining escapes
//!   upper-cased, dot segments removed in every raw and encoded spelling, repeated slashes
//!   merged; encoded slash, backslash (raw or encoded), NUL and other control characters, `;`
//!   path parameters, stray `%`, double-encoded dot/slash/backslash/NUL and escapes that are not
//!   UTF-8 are refused with 400;
//! - routes match case-sensitively, but a request whose route would change if letter case were
//!   ignored is refused with 400 (a case-insensitive upstream must not be reachable under the
//!   policy of another route);
//! - the query string is forwarded byte for byte.
//!
//! Three tests:
//! - a table of hostile spellings sent as raw bytes through the gateway to a real nginx whose
//!   protected locations model the normalisers found behind gateways (nginx's own decoding,
//!   case-insensitive file systems, `;` path parameters, backslash separators, a second
//!   decoding): nothing may reach a protected location;
//! - a table of ordinary and non-canonical targets sent to a recording upstream, checking the
//!   exact request line and Host it receives;
//! - a property: for generated targets, the route the gateway picks agrees with an independent
//!   resolver (the WHATWG URL parser of the `url` crate plus RFC 3986 §6.2.2.2 decoding), and
//!   the path forwarded is that resolver's canonical path.
//!
//! Raw sockets throughout: HTTP clients normalise paths before sending them.

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;

use proptest::strategy::{Just, Strategy, Union};
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::nginx::{Nginx, nginx_binary};
use crate::support::{Scratch, parse_config, start_gateway, test_config_text};

const PUBLIC_HOST: &str = "public.example";
const SECURE_HOST: &str = "secure.example";

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.x exchanges
// ---------------------------------------------------------------------------------------------

/// The bytes of one request: `METHOD target VERSION`, one `Host` line per entry of `hosts`,
/// `Connection: close`.
fn request(method: &str, target: &str, version: &str, hosts: &[&str]) -> Vec<u8> {
    let mut text = format!("{method} {target} {version}\r\n");
    for host in hosts {
        text.push_str(&format!("Host: {host}\r\n"));
    }
    text.push_str("Connection: close\r\n\r\n");
    text.into_bytes()
}

/// A request as one readable line: its head, lines joined by ` | `, control bytes escaped.
fn describe_request(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    head.split("\r\n")
        .filter(|line| !line.eq_ignore_ascii_case("connection: close"))
        .map(|line| {
            line.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// An answer read off a raw connection.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// `code` of the gateway's error envelope `{"success":false,"code":…}`, if the body is one.
    fn envelope_code(&self) -> Option<String> {
        let body = self.json()?;
        if body["success"] != json!(false) {
            return None;
        }
        body["code"].as_str().map(str::to_string)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a complete chunked body; `None` while it is incomplete.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = find(data, b"\r\n")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        if data.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// The reply in `buf`, `Ok(None)` while more bytes are needed, or why there is none.
fn parse_reply(buf: &[u8], eof: bool) -> Result<Option<Reply>, String> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if !eof {
            Ok(None)
        } else if buf.is_empty() {
            Err("the connection closed without an answer".into())
        } else {
            Err(format!(
                "a truncated answer: {:?}",
                String::from_utf8_lossy(buf)
            ))
        };
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP answer: {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &buf[end + 4..];
    let mut reply = Reply {
        status,
        headers,
        body: Vec::new(),
    };
    let chunked = reply
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let length = reply
        .header("content-length")
        .and_then(|l| l.parse::<usize>().ok());
    if chunked {
        match dechunk(rest) {
            Some(body) => reply.body = body,
            None if eof => return Err(format!("a truncated chunked answer ({status})")),
            None => return Ok(None),
        }
    } else if let Some(length) = length {
        if rest.len() >= length {
            reply.body = rest[..length].to_vec();
        } else if eof {
            return Err(format!("a truncated answer ({status})"));
        } else {
            return Ok(None);
        }
    } else if matches!(status, 100..=199 | 204 | 304) {
    } else if eof {
        reply.body = rest.to_vec();
    } else {
        return Ok(None);
    }
    Ok(Some(reply))
}

/// Sends `request` on a fresh connection and reads one answer (10 s at most).
async fn exchange(addr: SocketAddr, request: &[u8]) -> Result<Reply, String> {
    let attempt = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        stream
            .write_all(request)
            .await
            .map_err(|e| format!("cannot send: {e}"))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => return parse_reply(&buf, true).map(|r| r.expect("complete at eof")),
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(reply) = parse_reply(&buf, false)? {
                        return Ok(reply);
                    }
                }
                // A reset right after a complete answer still counts as that answer.
                Err(e) => {
                    return parse_reply(&buf, true)
                        .map(|r| r.expect("complete at eof"))
                        .map_err(|why| format!("{why} ({e})"));
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .unwrap_or_else(|_| Err("no complete answer within 10 s".into()))
}

// ---------------------------------------------------------------------------------------------
// A recording upstream: answers with the exact request line and headers it received
// ---------------------------------------------------------------------------------------------

/// An upstream that answers every request with a JSON record of its exact request line and
/// header lines (`{"upstream": name, "line": …, "headers": [[name, value], …]}`). Unlike an
/// HTTP-library upstream it neither parses nor normalises the target, so the test sees the
/// bytes the gateway sent.
struct RecordingUpstream {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl RecordingUpstream {
    async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind recording upstream");
        let addr = listener.local_addr().expect("recording upstream address");
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(record_one(stream, name));
            }
        });
        Self { addr, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record_one(mut stream: TcpStream, name: &'static str) {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = find(&head, b"\r\n\r\n") {
            break end;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let body = json!({"upstream": name, "line": line, "headers": headers}).to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// What a recording upstream reported: its name, the request line, the Host values.
struct Recorded {
    upstream: String,
    line: String,
    hosts: Vec<String>,
}

impl Recorded {
    fn of(reply: &Reply) -> Option<Self> {
        let body = reply.json()?;
        let upstream = body["upstream"].as_str()?.to_string();
        let line = body["line"].as_str()?.to_string();
        let hosts = body["headers"]
            .as_array()?
            .iter()
            .filter(|h| {
                h[0].as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case("host"))
            })
            .filter_map(|h| h[1].as_str().map(str::to_string))
            .collect();
        Some(Self {
            upstream,
            line,
            hosts,
        })
    }

    /// The request-target of the recorded request line.
    fn target(&self) -> &str {
        self.line.split(' ').nth(1).unwrap_or("")
    }
}

fn route_toml(name: &str, host: &str, prefix: &str, upstream: &str, policy: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\nhost = \"{host}\"\npath_prefix = \"{prefix}\"\nupstream = \"{upstream}\"\npolicy = \"{policy}\"\n"
    )
}

// ---------------------------------------------------------------------------------------------
// 1. Hostile spellings never reach a protected location of a real nginx
// ---------------------------------------------------------------------------------------------

/// The upstream: nginx, whose protected locations answer `LEAK …` and whose public one answers
/// `public $uri`. nginx matches locations on its own normalised `$uri` (percent-decoded, slashes
/// merged, dot segments removed); the regex locations model other normalisers found behind
/// gateways. A `secure.example` server answers `LEAK secure …` to everything.
fn nginx_servers(port: u16) -> String {
    format!(
        r#"
    server {{
        listen 127.0.0.1:{port} default_server;
        server_name _;
        default_type text/plain;

        # nginx's own view of the path.
        location = /admin {{ return 200 "LEAK admin $uri\n"; }}
        location ^~ /admin/ {{ return 200 "LEAK admin $uri\n"; }}
        location = /app {{ return 200 "LEAK app $uri\n"; }}
        location ^~ /app/ {{ return 200 "LEAK app $uri\n"; }}
        # Case-insensitive upstreams (IIS, Windows and macOS file systems).
        location ~* "^/(admin|app)(/|$)" {{ return 200 "LEAK case-insensitive $uri\n"; }}
        # Path parameters (Tomcat, Jetty): /admin;x/y is /admin/y and /..;/ climbs.
        location ~* "^/(admin|app);" {{ return 200 "LEAK path-parameter $uri\n"; }}
        location ~ "/\.\.;" {{ return 200 "LEAK path-parameter $uri\n"; }}
        # Backslash as a separator (IIS, WHATWG URL parsers).
        location ~ "\\\\" {{ return 200 "LEAK backslash $uri\n"; }}
        # A second decoding (double-decoding frameworks) would make these a dot, slash,
        # backslash or NUL.
        location ~* "%(2e|2f|5c|00)" {{ return 200 "LEAK double-decoding $uri\n"; }}

        location / {{ return 200 "public $uri\n"; }}
    }}

    server {{
        listen 127.0.0.1:{port};
        server_name {SECURE_HOST};
        default_type text/plain;
        location / {{ return 200 "LEAK secure $uri\n"; }}
    }}
"#
    )
}

/// What a case must produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// 400 with the gateway's JSON envelope.
    Bad,
    /// This status from the gateway itself, with its JSON envelope (route policy, local API).
    Gate(u16),
    /// Forwarded, and answered by nginx's public location.
    Public,
    /// A refusal by the gateway (400, 401, 403 or 404): the rules allow more than one.
    Blocked,
    /// A refusal by the gateway or the public location: the rules allow either.
    Safe,
    /// Anything but a 400, a 5xx or a leak (`OPTIONS *` is a valid request).
    NotBad,
    /// The gateway's own JWKS document (a local endpoint reached through a canonical path).
    Jwks,
}

impl Expect {
    fn describe(self) -> String {
        match self {
            Self::Bad => "400 from the gateway".into(),
            Self::Gate(status) => format!("{status} from the gateway"),
            Self::Public => "the public location".into(),
            Self::Blocked => "a refusal (400/401/403/404) from the gateway".into(),
            Self::Safe => "a refusal from the gateway or the public location".into(),
            Self::NotBad => "an answer other than 400".into(),
            Self::Jwks => "the gateway's JWKS".into(),
        }
    }
}

/// What came back, classified.
enum Seen {
    /// The gateway's JSON error envelope.
    Refused { status: u16, code: String },
    /// The gateway's JWKS.
    Jwks,
    /// nginx's public location.
    Public(String),
    /// A protected location of nginx.
    Leak(u16, String),
    /// 400 with an empty body from Pingora's own request checks, before any gateway code:
    /// two `Host` fields, userinfo, an absolute-form authority that differs from `Host` or
    /// that does not parse. A refusal, without the envelope.
    ParserRefused,
    /// Anything else: an answer without the envelope, an nginx error page, no answer.
    Other(String),
}

impl Seen {
    fn of(reply: Result<Reply, String>) -> Self {
        let reply = match reply {
            Ok(reply) => reply,
            Err(why) => return Self::Other(format!("no answer: {why}")),
        };
        let text = reply.text();
        if text.contains("LEAK") {
            return Self::Leak(reply.status, text.trim_end().to_string());
        }
        if let Some(code) = reply.envelope_code() {
            return Self::Refused {
                status: reply.status,
                code,
            };
        }
        if reply.status == 200 && text.starts_with("public ") {
            return Self::Public(text.trim_end().to_string());
        }
        if reply.status == 200 && reply.json().is_some_and(|j| j["keys"].is_array()) {
            return Self::Jwks;
        }
        let mut shown: String = text.chars().take(120).collect();
        if shown.len() < text.len() {
            shown.push('…');
        }
        let server = reply
            .header("server")
            .map(|s| format!(", Server: {s}"))
            .unwrap_or_default();
        if reply.status == 400
            && text.is_empty()
            && reply
                .header("server")
                .is_some_and(|s| s.eq_ignore_ascii_case("pingora"))
        {
            return Self::ParserRefused;
        }
        Self::Other(format!(
            "{} without the gateway's envelope{server}: {shown:?}",
            reply.status
        ))
    }

    fn describe(&self) -> String {
        match self {
            Self::Refused { status, code } => format!("{status} {code} from the gateway"),
            Self::Jwks => "200 JWKS from the gateway".into(),
            Self::Public(body) => format!("200 {body:?} from nginx"),
            Self::Leak(status, body) => format!("{status} {body:?} from nginx: A LEAK"),
            Self::ParserRefused => "400 with an empty body from Pingora's request checks".into(),
            Self::Other(what) => what.clone(),
        }
    }

    fn satisfies(&self, expect: Expect) -> bool {
        match (self, expect) {
            (Self::Leak(..), _) => false,
            (Self::Refused { status, .. }, Expect::Bad) => *status == 400,
            (Self::Refused { status, .. }, Expect::Gate(s)) => *status == s,
            (Self::Public(_), Expect::Public) => true,
            (Self::Refused { status, .. }, Expect::Blocked | Expect::Safe) => {
                matches!(status, 400 | 401 | 403 | 404)
            }
            (Self::Public(_), Expect::Safe) => true,
            (Self::Jwks, Expect::Jwks) => true,
            (Self::ParserRefused, Expect::Bad | Expect::Blocked | Expect::Safe) => true,
            (Self::Refused { status, .. }, Expect::NotBad) => *status != 400 && *status < 500,
            (Self::Public(_) | Self::Jwks, Expect::NotBad) => true,
            (Self::Other(what), Expect::NotBad) => {
                !what.starts_with("no answer") && !what.starts_with("400") && !what.starts_with('5')
            }
            _ => false,
        }
    }
}

struct Case {
    request: Vec<u8>,
    expect: Expect,
}

fn case(method: &str, target: &str, version: &str, hosts: &[&str], expect: Expect) -> Case {
    // An absolute-form target names its host; a `Host` beside it that says anything else,
    // byte for byte, makes the request name two hosts. Pingora refuses that (stricter than
    // RFC 9112 §3.2.2, which lets the authority win), and so the gateway never guesses.
    let lower = target.to_ascii_lowercase();
    let authority = ["http://", "https://"]
        .iter()
        .find_map(|scheme| lower.strip_prefix(scheme).map(|_| &target[scheme.len()..]))
        .map(|rest| &rest[..rest.find(['/', '?']).unwrap_or(rest.len())]);
    let expect = match authority {
        Some(authority) if hosts.iter().any(|h| *h != authority) => Expect::Bad,
        _ => expect,
    };
    Case {
        request: request(method, target, version, hosts),
        expect,
    }
}

/// `GET target HTTP/1.1` with `Host: public.example`.
fn get(target: &str, expect: Expect) -> Case {
    case("GET", target, "HTTP/1.1", &[PUBLIC_HOST], expect)
}

/// Targets that are ordinary and canonical already: forwarded unchanged, answered publicly.
const ORDINARY: &[&str] = &[
    "/",
    "/index.html",
    "/static/app.js?v=1&x=%2F",
    "/search?q=../admin",
    "/search?q=%2e%2e%2fadmin/../admin",
    "/a/b/",
    "/~user/",
    "/x%20y",
    "/caf%C3%A9",
    "/x?a=1;b=2",
    "/static/a-b_c.d~e",
    "/administrator",
    "/apple",
    "/static/admin",
    "/static/app/x",
    "/x?/admin/",
    "/?",
    "/x?",
    "/x?%00",
    "/x?a=%5C..%5Cadmin",
    "/x?a=\\..\\admin",
    "/x?a=%zz",
    "/static/ADMIN",
    "/Static/x",
    "/ADMINISTRATOR",
    "/%25",
    "/x%2Ay",
    "/a.b/c..d/...",
    "/x?admin/../..",
    "/x%3Fy",
    "/x%23y",
];

/// The table: every hostile spelling we know of, and its expected outcome under the rules.
fn table() -> Vec<Case> {
    use Expect::*;
    let mut cases: Vec<Case> = Vec::new();

    // Ordinary targets.
    cases.extend(ORDINARY.iter().map(|t| get(t, Public)));

    // Dot segments in every spelling, after public and protected prefixes.
    const DOUBLE_DOTS: &[&str] = &[
        "..", "%2e%2e", "%2E%2E", "%2e%2E", "%2E%2e", ".%2e", "%2e.", ".%2E", "%2E.",
    ];
    for d in DOUBLE_DOTS {
        cases.push(get(&format!("/static/{d}/admin/x"), Gate(403)));
        cases.push(get(&format!("/app/{d}/admin"), Gate(403)));
        cases.push(get(&format!("/static/x/{d}/{d}/admin/"), Gate(403)));
        cases.push(get(&format!("/admin/{d}"), Public));
        cases.push(get(&format!("/static/{d};/admin/x"), Bad));
    }
    for o in [".", "%2e", "%2E"] {
        cases.push(get(&format!("/{o}/admin/x"), Gate(403)));
        cases.push(get(&format!("/admin/{o}"), Gate(403)));
        cases.push(get(&format!("/app/{o}/x"), Gate(401)));
    }
    for (target, expect) in [
        ("/static/../admin/x", Gate(403)),
        ("/static/./../admin/x", Gate(403)),
        ("/../admin/x", Gate(403)),
        ("/../../../admin/x", Gate(403)),
        ("/static/x/../../admin", Gate(403)),
        ("/admin/x/..", Gate(403)),
        ("/admin/x/../", Gate(403)),
        ("/admin/..", Public),
        ("/admin/../", Public),
        ("/static/..", Public),
        ("/app/..", Public),
        ("/app/.", Gate(401)),
        ("/app/../admin/x", Gate(403)),
        ("/admin/../app/x", Gate(401)),
        ("/admin/x/../../static", Public),
        ("/static/.../admin", Public),
        ("/admin./x", Bad),
        ("/static/..%2fadmin/x", Bad),
        ("/static/..%2Fadmin", Bad),
        ("/static/%2e%2e%2fadmin", Bad),
        ("/static/%2e%2e%5cadmin", Bad),
        ("/app%2f..%2fadmin", Bad),
        ("/static/..;/admin/x", Bad),
        ("/admin/..;/x", Bad),
        ("/static/%2e%2e/static/%2e%2e/%2e%2e/app/x", Gate(401)),
        ("/static/.%2e/.%2E/admin/%2e/x", Gate(403)),
    ] {
        cases.push(get(target, expect));
    }

    // Encoded letters: equivalent spellings of /admin and /app are /admin and /app.
    for a in [
        "%61dmin",
        "a%64min",
        "ad%6din",
        "adm%69n",
        "admi%6e",
        "%61%64%6d%69%6e",
        "%61%64%6D%69%6E",
    ] {
        cases.push(get(&format!("/{a}/x"), Gate(403)));
        cases.push(get(&format!("/static/../{a}"), Gate(403)));
    }
    for a in ["%61pp", "a%70p", "%61%70%70"] {
        cases.push(get(&format!("/{a}/x"), Gate(401)));
    }
    for (target, expect) in [
        ("/s%74atic/../admin", Gate(403)),
        ("/%73tatic/%2e%2e/%61dmin/x", Gate(403)),
        // A double-encoded letter is a `%` followed by text: forwarding it is allowed, and a
        // single decoding upstream sees `/%61dmin`, not `/admin`.
        ("/%2561dmin/x", Safe),
        ("/%2561pp/x", Safe),
        // `%32%65` are unreserved: decoded, this is `/%252E%252E/admin`, double-encoded dots.
        ("/%25%32%65%25%32%65/admin", Bad),
    ] {
        cases.push(get(target, expect));
    }

    // Letter case: a route that changes when case is ignored is a 400.
    for a in [
        "ADMIN",
        "Admin",
        "aDmIn",
        "adMin",
        "%41dmin",
        "%41%44%4d%49%4e",
        "APP",
        "App",
        "aPp",
        "%41pp",
        "%41%50%50",
    ] {
        cases.push(get(&format!("/{a}/x"), Bad));
        cases.push(get(&format!("/{a}"), Bad));
    }
    for (target, expect) in [
        ("/Admin;x", Bad),
        ("/app/MyFile", Gate(401)),
        ("/admin/X", Gate(403)),
        ("/APP/../admin", Gate(403)),
        ("/admin/../APP", Bad),
        ("/static/../ADMIN/x", Bad),
        ("/%2e%2e/Admin", Bad),
    ] {
        cases.push(get(target, expect));
    }

    // Slashes.
    for (target, expect) in [
        ("//admin/x", Gate(403)),
        ("///admin", Gate(403)),
        ("//app/x", Gate(401)),
        ("/admin//x", Gate(403)),
        ("/.//admin", Gate(403)),
        ("/static/%2e%2e//admin", Gate(403)),
        ("//", Public),
        ("//static//a.js", Public),
        // `//x` is origin-form, not a network-path reference: merged, it is `/secure.example/x`.
        ("//secure.example/x", Public),
        ("//secure.example/admin", Public),
        // Merging before or after dot removal resolves these differently (`/admin` or under
        // `/static`): either is safe as long as the upstream gets the path that was routed.
        ("/static//../admin", Safe),
        ("/static/x//..//..//admin", Safe),
        ("/%2F%2Fadmin", Bad),
        ("/%2f/admin", Bad),
        ("/admin%2fx", Bad),
        ("/static%2F..%2Fadmin", Bad),
    ] {
        cases.push(get(target, expect));
    }

    // Backslashes, raw and encoded.
    for target in [
        "/static\\..\\admin\\x",
        "/admin\\x",
        "/static/..\\admin",
        "/\\admin",
        "/%5cadmin",
        "/%5Cadmin",
        "/static%5c..%5cadmin",
        "/static/%5C%2e%2e%5Cadmin",
        "/app\\",
    ] {
        cases.push(get(target, Bad));
    }

    // `;` path parameters, raw and encoded.
    for target in [
        "/admin;x/secret",
        "/admin;/x",
        "/admin;",
        "/admin%3bx/secret",
        "/admin%3Bx",
        "/app;jsessionid=1/x",
        "/static;x",
        "/;/admin",
        "/static/..%3b/admin",
        "/x;y",
    ] {
        cases.push(get(target, Bad));
    }

    // NUL and other control characters, encoded.
    for target in [
        "/admin%00/x",
        "/static/%00/../admin",
        "/static/%00",
        "/admin%0a",
        "/x%0A",
        "/static/x%0d%0aX-Evil:%201",
        "/x%0D",
        "/admin%09",
        "/%7f",
        "/%7F/x",
        "/%1f/x",
        "/%01",
    ] {
        cases.push(get(target, Bad));
    }
    // Raw control characters in the request line.
    for target in ["/ad\x01min", "/admin\x7f", "/static/\x0b/../admin"] {
        cases.push(get(target, Bad));
    }

    // Percent-escapes that are not UTF-8: overlong encodings of `.`, `/`, `\`, stray bytes.
    for target in [
        "/static/%c0%ae%c0%ae/admin",
        "/static/%C0%AE%C0%AE/admin",
        "/static/..%c0%afadmin",
        "/%c0%af",
        "/static/%c1%9c..%c1%9cadmin",
        "/static/%e0%80%ae%e0%80%ae/admin",
        "/%80",
        "/%ff",
        "/x%c3",
        "/%ed%a0%80",
    ] {
        cases.push(get(target, Bad));
    }

    // Double encoding of dot, slash, backslash and NUL.
    for target in [
        "/static/%252e%252e/admin",
        "/static/%252E%252E/admin",
        "/static/..%252fadmin",
        "/admin%252fx",
        "/admin%252Fx",
        "/static%255c..%255cadmin",
        "/static%255C..%255Cadmin",
        "/admin%2500",
        "/%252e",
    ] {
        cases.push(get(target, Bad));
    }

    // `%` not followed by two hex digits.
    for target in [
        "/admin%",
        "/admin%2",
        "/admin%zz",
        "/%g0",
        "/%",
        "/static/%%32%65%%32%65/admin",
        "/x%2",
        "/%%",
    ] {
        cases.push(get(target, Bad));
    }

    // Fragments are not part of a request-target; dropping or refusing them is safe.
    for target in ["/x#frag", "/static/x#/../../admin"] {
        cases.push(get(target, Safe));
    }

    // Host spellings (target `/x`, then `/admin/x` on the secure host).
    for (host, expect) in [
        ("secure.example", Gate(401)),
        ("secure.example.", Gate(401)),
        ("SECURE.example", Gate(401)),
        ("Secure.Example.", Gate(401)),
        ("secure.example:8080", Gate(401)),
        ("secure.example:65535", Gate(401)),
        ("secure.example.:80", Gate(401)),
        ("SECURE.EXAMPLE:443", Gate(401)),
        // An empty port and port 0 are both digits-or-nothing: accepted or refused.
        ("secure.example:", Blocked),
        ("secure.example:0", Blocked),
        // Trailing whitespace is not part of a field value (RFC 9110 §5.5): accepted as
        // `secure.example`, or refused.
        ("secure.example ", Blocked),
        ("secure.example..", Bad),
        ("secure..example", Bad),
        (".secure.example", Bad),
        ("secure.example:99999", Bad),
        ("secure.example:65536", Bad),
        ("secure.example:8o", Bad),
        ("secure.example:-1", Bad),
        ("secure.example:+80", Bad),
        ("secure.example:80:80", Bad),
        ("user@secure.example", Bad),
        ("user:pw@secure.example", Bad),
        ("secure%2eexample", Bad),
        ("secure%2Eexample", Bad),
        ("%73ecure.example", Bad),
        ("secure .example", Bad),
        ("secure.example/x", Bad),
        ("secure.example\\", Bad),
        ("secure.example?", Bad),
        ("secure.example#", Bad),
        ("secure.example, public.example", Bad),
        ("", Bad),
        (":80", Bad),
        (".", Bad),
        ("..", Bad),
        ("public.example", Public),
        ("PUBLIC.EXAMPLE.", Public),
        ("127.0.0.1", Public),
        ("127.0.0.1:80", Public),
    ] {
        cases.push(case("GET", "/x", "HTTP/1.1", &[host], expect));
    }
    for host in ["secure.example", "secure.example.", "SECURE.EXAMPLE.:80"] {
        cases.push(case("GET", "/admin/x", "HTTP/1.1", &[host], Gate(401)));
        cases.push(case(
            "GET",
            "/%2e%2e/%61dmin",
            "HTTP/1.1",
            &[host],
            Gate(401),
        ));
        cases.push(case("GET", "/static/../x", "HTTP/1.1", &[host], Gate(401)));
    }
    cases.push(case(
        "GET",
        "/admin/x",
        "HTTP/1.1",
        &[PUBLIC_HOST],
        Gate(403),
    ));

    // Exactly one Host, required on HTTP/1.1.
    for (target, version, hosts, expect) in [
        ("/x", "HTTP/1.1", &[][..], Bad),
        ("/admin/x", "HTTP/1.1", &[][..], Bad),
        ("/x", "HTTP/1.1", &[SECURE_HOST, SECURE_HOST][..], Bad),
        ("/x", "HTTP/1.1", &[SECURE_HOST, PUBLIC_HOST][..], Bad),
        ("/x", "HTTP/1.1", &[PUBLIC_HOST, SECURE_HOST][..], Bad),
        ("/x", "HTTP/1.1", &[PUBLIC_HOST, PUBLIC_HOST][..], Bad),
        ("/x", "HTTP/1.0", &[][..], Public),
        ("/admin/x", "HTTP/1.0", &[][..], Gate(403)),
        ("/%2e%2e/%61dmin", "HTTP/1.0", &[][..], Gate(403)),
        ("/x", "HTTP/1.0", &[SECURE_HOST][..], Gate(401)),
        ("/x", "HTTP/1.0", &[SECURE_HOST, PUBLIC_HOST][..], Bad),
    ] {
        cases.push(case("GET", target, version, hosts, expect));
    }
    for raw in [
        "GET /x HTTP/1.1\r\nHOST: secure.example\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nhost: secure.example\r\nConnection: close\r\n\r\n",
    ] {
        cases.push(Case {
            request: raw.as_bytes().to_vec(),
            expect: Gate(401),
        });
    }
    cases.push(Case {
        request: b"GET /x HTTP/1.1\r\nHost: secure.example\r\nhost: public.example\r\nConnection: close\r\n\r\n".to_vec(),
        expect: Bad,
    });

    // Absolute-form: routed on its authority, which replaces Host.
    for (target, version, hosts, expect) in [
        (
            "http://secure.example/x",
            "HTTP/1.1",
            &[SECURE_HOST][..],
            Gate(401),
        ),
        (
            "HTTP://SECURE.EXAMPLE/x",
            "HTTP/1.1",
            &[SECURE_HOST][..],
            Gate(401),
        ),
        (
            "http://secure.example./x",
            "HTTP/1.1",
            &[SECURE_HOST][..],
            Gate(401),
        ),
        (
            "http://secure.example:80/x",
            "HTTP/1.1",
            &[SECURE_HOST][..],
            Gate(401),
        ),
        (
            "https://secure.example/x",
            "HTTP/1.1",
            &[SECURE_HOST][..],
            Gate(401),
        ),
        (
            "hTTpS://Secure.Example.:443/x",
            "HTTP/1.1",
            &[SECURE_HOST][..],
            Gate(401),
        ),
        (
            "http://secure.example/x",
            "HTTP/1.1",
            &[PUBLIC_HOST][..],
            Gate(401),
        ),
        (
            "http://secure.example./x",
            "HTTP/1.1",
            &[PUBLIC_HOST][..],
            Gate(401),
        ),
        (
            "HTTP://SECURE.EXAMPLE/admin/x",
            "HTTP/1.1",
            &[PUBLIC_HOST][..],
            Gate(401),
        ),
        (
            "http://secure.example",
            "HTTP/1.1",
            &[PUBLIC_HOST][..],
            Gate(401),
        ),
        (
            "http://secure.example?x",
            "HTTP/1.1",
            &[PUBLIC_HOST][..],
            Gate(401),
        ),
        (
            "http://secure.example/../x",
            "HTTP/1.1",
            &[PUBLIC_HOST][..],
            Gate(401),
        ),
        ("http://secure.example/x", "HTTP/1.0", &[][..], Gate(401)),
        (
            "http://secure.example/x",
            "HTTP/1.0",
            &[PUBLIC_HOST][..],
            Gate(401),
        ),
        // RFC 9112 §3.2 wants a Host on HTTP/1.1 even then: a 400, or routed on the authority.
        ("http://secure.example/x", "HTTP/1.1", &[][..], Blocked),
        ("http://public.example/x", "HTTP/1.1", &[][..], Safe),
        (
            "http://public.example/x",
            "HTTP/1.1",
            &[SECURE_HOST][..],
            Public,
        ),
        (
            "http://public.example/x",
            "HTTP/1.1",
            &[PUBLIC_HOST][..],
            Public,
        ),
        (
            "http://public.example",
            "HTTP/1.1",
            &[PUBLIC_HOST][..],
            Public,
        ),
        (
            "http://public.example/x?q=../admin",
            "HTTP/1.1",
            &[PUBLIC_HOST][..],
            Public,
        ),
        (
            "https://public.example/x",
            "HTTP/1.1",
            &[SECURE_HOST][..],
            Public,
        ),
        (
            "http://public.example/admin/x",
            "HTTP/1.1",
            &[PUBLIC_HOST][..],
            Gate(403),
        ),
        (
            "http://public.example/%2e%2e/%61dmin/x",
            "HTTP/1.1",
            &[PUBLIC_HOST][..],
            Gate(403),
        ),
        (
            "http://public.example//admin",
            "HTTP/1.1",
            &[PUBLIC_HOST][..],
            Gate(403),
        ),
        (
            "http://public.example/ADMIN",
            "HTTP/1.1",
            &[PUBLIC_HOST][..],
            Bad,
        ),
        (
            "http://public.example/static/..;/admin",
            "HTTP/1.1",
            &[PUBLIC_HOST][..],
            Bad,
        ),
        (
            "http://public.example/%2fadmin",
            "HTTP/1.1",
            &[PUBLIC_HOST][..],
            Bad,
        ),
        (
            "http://user@secure.example/x",
            "HTTP/1.1",
            &[SECURE_HOST][..],
            Bad,
        ),
        (
            "http://public.example@secure.example/x",
            "HTTP/1.1",
            &[PUBLIC_HOST][..],
            Bad,
        ),
        (
            "http://secure.example:99999/x",
            "HTTP/1.1",
            &[SECURE_HOST][..],
            Bad,
        ),
        (
            "http://secure.example:/x",
            "HTTP/1.1",
            &[SECURE_HOST][..],
            Blocked,
        ),
        (
            "http://secure.example../x",
            "HTTP/1.1",
            &[PUBLIC_HOST][..],
            Bad,
        ),
        (
            "http://.secure.example/x",
            "HTTP/1.1",
            &[PUBLIC_HOST][..],
            Bad,
        ),
        (
            "http://secure%2eexample/x",
            "HTTP/1.1",
            &[PUBLIC_HOST][..],
            Bad,
        ),
        ("http:///admin", "HTTP/1.1", &[PUBLIC_HOST][..], Bad),
        ("http://:80/admin", "HTTP/1.1", &[PUBLIC_HOST][..], Bad),
        (
            "ftp://secure.example/x",
            "HTTP/1.1",
            &[SECURE_HOST][..],
            Bad,
        ),
        ("ws://secure.example/x", "HTTP/1.1", &[SECURE_HOST][..], Bad),
        ("http:/admin/x", "HTTP/1.1", &[PUBLIC_HOST][..], Bad),
        ("http:admin/x", "HTTP/1.1", &[PUBLIC_HOST][..], Bad),
    ] {
        cases.push(case("GET", target, version, hosts, expect));
    }

    // Absolute-form with a Host that repeats the authority byte for byte: the authority is
    // canonicalised like a Host (case, trailing dot, port) and the path like any path.
    for (target, host, expect) in [
        ("HTTP://SECURE.EXAMPLE/x", "SECURE.EXAMPLE", Gate(401)),
        ("http://secure.example./x", "secure.example.", Gate(401)),
        ("http://secure.example:80/x", "secure.example:80", Gate(401)),
        (
            "hTTpS://Secure.Example.:443/x",
            "Secure.Example.:443",
            Gate(401),
        ),
        ("http://secure.example", "secure.example", Gate(401)),
        ("http://secure.example?x", "secure.example", Gate(401)),
        (
            "http://SECURE.EXAMPLE./%2e%2e/admin",
            "SECURE.EXAMPLE.",
            Gate(401),
        ),
        ("http://public.example./x", "public.example.", Public),
        (
            "HTTP://PUBLIC.EXAMPLE/%2e%2e/%61dmin",
            "PUBLIC.EXAMPLE",
            Gate(403),
        ),
        ("http://public.example//app/x", "public.example", Gate(401)),
        ("http://public.example/Admin", "public.example", Bad),
        (
            "http://public.example/x%2f..%2fadmin",
            "public.example",
            Bad,
        ),
        ("http://secure.example:/x", "secure.example:", Blocked),
        ("http://secure.example../x", "secure.example..", Bad),
        ("http://.secure.example/x", ".secure.example", Bad),
        ("http://secure.example:99999/x", "secure.example:99999", Bad),
        ("http://secure%2eexample/x", "secure%2eexample", Bad),
    ] {
        cases.push(case("GET", target, "HTTP/1.1", &[host], expect));
    }

    // Target forms other than origin-form and absolute-form.
    cases.push(get("*", Bad));
    cases.push(case("OPTIONS", "*", "HTTP/1.1", &[PUBLIC_HOST], NotBad));
    cases.push(case(
        "OPTIONS",
        "/admin/x",
        "HTTP/1.1",
        &[PUBLIC_HOST],
        Gate(403),
    ));
    for target in [
        "admin/x",
        "admin",
        "?x",
        "x:/admin",
        "secure.example:443",
        "public.example:80",
        "secure.example",
        "../admin",
        ".",
        "%2fadmin",
        "*/admin",
        "\\admin",
    ] {
        cases.push(get(target, Bad));
    }

    // Local endpoints see the canonical path too.
    for (target, expect) in [
        ("/api//auth/../auth/verify", Gate(401)),
        ("/api/auth/./verify", Gate(401)),
        ("/api/auth/%2e/verify", Gate(401)),
        ("/%61pi/auth/verify", Gate(401)),
        ("/api/auth/../../admin/x", Gate(403)),
        ("/api/auth/%2e%2e/%2e%2e/admin/x", Gate(403)),
        ("/api/auth/..;/../admin", Bad),
        ("/api/auth%2fverify", Bad),
        ("/.well-known/../admin/x", Gate(403)),
        ("/.well-known//jwks.json", Jwks),
        ("/.well-known/%6Awks.json", Jwks),
        ("/static/../.well-known/jwks.json", Jwks),
    ] {
        cases.push(get(target, expect));
    }

    // Combinations.
    for (target, expect) in [
        ("//%2e%2e//%61dmin//x", Gate(403)),
        ("/static/%2E./%2e%2E/a%64min/./x/", Gate(403)),
        ("/x/%2e%2e/%2e%2e/%61pp/../admin", Gate(403)),
        ("/static/..%2f..%2f%61dmin", Bad),
        ("/static/%2e%2e%3b/admin", Bad),
        ("/%41DMIN%2fx", Bad),
        ("/static/%2e%2e/ADMIN/x", Bad),
        ("/static\\..%2fadmin", Bad),
        ("/%2e%2e%5c%2e%2e%5cadmin", Bad),
        ("/static/%c0%ae%c0%ae%2fadmin", Bad),
        ("/static/.%00./admin", Bad),
        ("/app/..%3b/admin", Bad),
        // Windows readings: trailing dots and spaces, alternate data streams, 8.3 names.
        ("/admin./secret", Bad),
        ("/admin%2e/secret", Bad),
        ("/admin%20/secret", Bad),
        ("/admin.%20./secret", Bad),
        ("/app./x", Bad),
        ("/Admin.", Bad),
        ("/admin::$DATA", Bad),
        ("/admin::%24DATA", Bad),
        ("/admin%3A%3A%24DATA", Bad),
        ("/admin:$DATA/secret", Bad),
        ("/ADMIN~1/secret", Bad),
        // Unicode letters whose case mapping is ASCII (Java, .NET): ı, İ, ſ, the Kelvin sign.
        ("/adm%C4%B1n/secret", Bad),
        ("/adm%c4%b1n/secret", Bad),
        ("/adm%C4%B0n/secret", Bad),
        ("/%E2%84%AAey", Public),
        ("/admin/%C5%BFecret", Gate(403)),
        ("/static/ADMINI~1.TXT", Bad),
        // The account API, /health and the JWKS in another letter case are not forwarded.
        ("/API/auth/login", Bad),
        ("/api/AUTH/verify", Bad),
        ("/Health", Bad),
        ("/.Well-Known/jwks.json", Bad),
        ("/AUTH/login", Bad),
        ("/Auth/account", Bad),
    ] {
        cases.push(get(target, expect));
    }
    cases.push(case(
        "GET",
        "http://public.example/static/%2e%2e/%61dmin/x",
        "HTTP/1.1",
        &["secure.example."],
        Gate(403),
    ));
    cases.push(case(
        "GET",
        "http://SECURE.EXAMPLE./%2e%2e/admin",
        "HTTP/1.0",
        &[],
        Gate(401),
    ));
    cases.push(case(
        "GET",
        "/static/%2e%2e/%61dmin",
        "HTTP/1.1",
        &["SECURE.EXAMPLE."],
        Gate(401),
    ));

    cases
}

fn nginx_gateway_routes(nginx: &str) -> String {
    [
        route_toml("public", "", "/", nginx, "public"),
        route_toml("admin", "", "/admin", nginx, "deny"),
        route_toml("app", "", "/app", nginx, "authenticated"),
        route_toml("secure", SECURE_HOST, "/", nginx, "authenticated"),
    ]
    .concat()
}

#[tokio::test(flavor = "multi_thread")]
async fn no_spelling_of_a_target_or_host_reaches_a_protected_upstream_location() {
    let Some(binary) = nginx_binary() else {
        eprintln!("skipped: nginx is not installed");
        return;
    };
    let nginx = Nginx::start(&binary, nginx_servers);
    let scratch = Scratch::new();
    let config = parse_config(&test_config_text(
        scratch.dir.path(),
        &nginx_gateway_routes(&nginx.url()),
    ));
    let gw = start_gateway(config);

    let cases = table();
    assert!(cases.len() >= 150, "only {} cases", cases.len());
    let (mut refused, mut forwarded, mut leaked, mut other) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for case in &cases {
        let seen = Seen::of(exchange(gw.addr, &case.request).await);
        match &seen {
            Seen::Refused { .. } | Seen::Jwks | Seen::ParserRefused => refused += 1,
            Seen::Public(_) => forwarded += 1,
            Seen::Leak(..) => leaked += 1,
            Seen::Other(_) => other += 1,
        }
        if !seen.satisfies(case.expect) {
            failures.push(format!(
                "  {}\n      expected {}, got {}",
                describe_request(&case.request),
                case.expect.describe(),
                seen.describe()
            ));
        }
    }
    println!(
        "canonical requests: {} cases, {refused} answered by the gateway, {forwarded} forwarded \
         to a public location, {leaked} reached a protected location, {other} other",
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases broke the canonical-request rules:\n{}\n(nginx error log:\n{})",
        failures.len(),
        cases.len(),
        failures.join("\n"),
        nginx.error_log()
    );
}

// ---------------------------------------------------------------------------------------------
// 2. What the upstream receives: ordinary targets unchanged, the rest in canonical form
// ---------------------------------------------------------------------------------------------

/// (target sent, Host sent, request-target the upstream must receive, Host it must receive).
const CANONICAL: &[(&str, &str, &str, &str)] = &[
    ("/static/./a/../b", PUBLIC_HOST, "/static/b", PUBLIC_HOST),
    ("/%7euser", PUBLIC_HOST, "/~user", PUBLIC_HOST),
    ("/%7Euser/", PUBLIC_HOST, "/~user/", PUBLIC_HOST),
    ("//static///a", PUBLIC_HOST, "/static/a", PUBLIC_HOST),
    ("/x%3a", PUBLIC_HOST, "/x%3A", PUBLIC_HOST),
    ("/x%2a", PUBLIC_HOST, "/x%2A", PUBLIC_HOST),
    ("/caf%c3%a9", PUBLIC_HOST, "/caf%C3%A9", PUBLIC_HOST),
    (
        "/x%2d%2E%5f%7E%41%7a%30",
        PUBLIC_HOST,
        "/x-._~Az0",
        PUBLIC_HOST,
    ),
    ("/a/b/c/./../../g", PUBLIC_HOST, "/a/g", PUBLIC_HOST),
    ("/mid/content=5/../6", PUBLIC_HOST, "/mid/6", PUBLIC_HOST),
    ("/..", PUBLIC_HOST, "/", PUBLIC_HOST),
    ("/.", PUBLIC_HOST, "/", PUBLIC_HOST),
    ("/a/..", PUBLIC_HOST, "/", PUBLIC_HOST),
    ("/a/.", PUBLIC_HOST, "/a/", PUBLIC_HOST),
    ("/a/%2e%2e/", PUBLIC_HOST, "/", PUBLIC_HOST),
    ("/a/%2E/b", PUBLIC_HOST, "/a/b", PUBLIC_HOST),
    ("/a/.%2e/b", PUBLIC_HOST, "/b", PUBLIC_HOST),
    ("/../../x", PUBLIC_HOST, "/x", PUBLIC_HOST),
    (
        "/static/x?q=%7e&r=a//b/../c",
        PUBLIC_HOST,
        "/static/x?q=%7e&r=a//b/../c",
        PUBLIC_HOST,
    ),
    (
        "/%2e%2e/static/%2e/x?y=%2e%2e",
        PUBLIC_HOST,
        "/static/x?y=%2e%2e",
        PUBLIC_HOST,
    ),
    ("/s%74atic//x/.?q", PUBLIC_HOST, "/static/x/?q", PUBLIC_HOST),
    ("/x/%2e%2E/y?", PUBLIC_HOST, "/y?", PUBLIC_HOST),
    ("/p", "H.Example.", "/p", "h.example"),
    ("/p", "H.EXAMPLE", "/p", "h.example"),
    ("http://h.example/p?q", "h.example", "/p?q", "h.example"),
    ("HTTP://H.Example./p/../q", "H.Example.", "/q", "h.example"),
    ("http://h.example", "h.example", "/", "h.example"),
    (
        "https://h.example/%61/./b//c",
        "h.example",
        "/a/b/c",
        "h.example",
    ),
    (
        "http://h.example?a=%2e%2e/",
        "h.example",
        "/?a=%2e%2e/",
        "h.example",
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_receives_ordinary_targets_unchanged_and_others_in_canonical_form() {
    let upstream = RecordingUpstream::start("root").await;
    let scratch = Scratch::new();
    let config = parse_config(&test_config_text(
        scratch.dir.path(),
        &route_toml("root", "", "/", &upstream.url(), "public"),
    ));
    let gw = start_gateway(config);

    let mut expected: Vec<(&str, &str, &str, &str)> = ORDINARY
        .iter()
        .map(|t| (*t, PUBLIC_HOST, *t, PUBLIC_HOST))
        .collect();
    expected.extend_from_slice(CANONICAL);
    let mut failures = Vec::new();
    for (target, host, want_target, want_host) in &expected {
        let sent = request("GET", target, "HTTP/1.1", &[host]);
        let reply = exchange(gw.addr, &sent).await;
        let got = match &reply {
            Ok(reply) => match Recorded::of(reply) {
                Some(recorded) => recorded,
                None => {
                    failures.push(format!(
                        "  {}\n      not forwarded: {} {:?}",
                        describe_request(&sent),
                        reply.status,
                        reply.text()
                    ));
                    continue;
                }
            },
            Err(why) => {
                failures.push(format!(
                    "  {}\n      no answer: {why}",
                    describe_request(&sent)
                ));
                continue;
            }
        };
        let want_line = format!("GET {want_target} HTTP/1.1");
        if got.line != want_line || got.hosts != [want_host.to_string()] {
            failures.push(format!(
                "  {}\n      upstream must receive {want_line:?} with Host {want_host:?}, \
                 received {:?} with Host {:?}",
                describe_request(&sent),
                got.line,
                got.hosts
            ));
        }
    }
    // A port is ignored for matching; the upstream may or may not be told about it.
    let sent = request("GET", "/p", "HTTP/1.1", &["H.Example.:8080"]);
    match exchange(gw.addr, &sent).await.ok().as_ref().and_then(Recorded::of) {
        Some(got)
            if got.target() == "/p"
                && (got.hosts == ["h.example:8080"] || got.hosts == ["h.example"]) => {}
        Some(got) => failures.push(format!(
            "  {}\n      upstream must receive /p with Host h.example[:8080], received {:?} with Host {:?}",
            describe_request(&sent),
            got.line,
            got.hosts
        )),
        None => failures.push(format!(
            "  {}\n      not forwarded",
            describe_request(&sent)
        )),
    }
    println!(
        "canonical forwarding: {} targets checked",
        expected.len() + 1
    );
    assert!(
        failures.is_empty(),
        "{} of {} targets were not forwarded in canonical form:\n{}",
        failures.len(),
        expected.len() + 1,
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Property: the gateway's route agrees with an independent resolver
// ---------------------------------------------------------------------------------------------

/// The property gateway's routes (all public, each with its own upstream), longest first.
const PROPERTY_ROUTES: &[&str] = &["/static", "/admin", "/app", "/"];

/// The route of a canonical path: the longest prefix that matches on a segment boundary.
fn route_of(path: &str) -> &'static str {
    PROPERTY_ROUTES
        .iter()
        .copied()
        .find(|prefix| {
            *prefix == "/"
                || path
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
        .expect("`/` matches everything")
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Why the rules refuse this path (the target before its `?`), if they do.
fn refusal_reason(path: &str) -> Option<&'static str> {
    if path.contains('\\') {
        return Some("backslash");
    }
    if path.contains(';') {
        return Some("path parameter");
    }
    let bytes = path.as_bytes();
    if bytes.iter().any(|b| b.is_ascii_control()) {
        return Some("raw control character");
    }
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            decoded.push(bytes[i]);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).copied().and_then(hex_value),
            bytes.get(i + 2).copied().and_then(hex_value),
        ) else {
            return Some("`%` without two hex digits");
        };
        let value = hi * 16 + lo;
        match value {
            0x2F => return Some("encoded slash"),
            0x5C => return Some("encoded backslash"),
            0x3B => return Some("encoded path parameter"),
            v if v < 0x20 || v == 0x7F => return Some("encoded control character"),
            0x25 => {
                // `%25` before two hex digits, raw or escaped (`%252e`, `%25%32%65`): an
                // upstream that decodes twice reads another byte.
                let mut j = i + 3;
                let mut hex_digits = 0;
                for _ in 0..2 {
                    let unit = if bytes.get(j) == Some(&b'%') {
                        let unit = bytes
                            .get(j + 1)
                            .copied()
                            .and_then(hex_value)
                            .zip(bytes.get(j + 2).copied().and_then(hex_value))
                            .map(|(h, l)| h * 16 + l);
                        j += 3;
                        unit
                    } else {
                        j += 1;
                        bytes.get(j - 1).copied()
                    };
                    if !unit.is_some_and(|b| b.is_ascii_hexdigit()) {
                        break;
                    }
                    hex_digits += 1;
                }
                if hex_digits == 2 {
                    return Some("double encoding");
                }
            }
            _ => {}
        }
        decoded.push(value);
        i += 3;
    }
    if String::from_utf8(decoded).is_err() {
        return Some("escapes that are not UTF-8");
    }
    None
}

/// RFC 3986 §6.2.2.1–2: unreserved characters decoded, other escapes upper-cased.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex_value),
                bytes.get(i + 2).copied().and_then(hex_value),
            )
        {
            let c = (hi * 16 + lo) as char;
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~') {
                out.push(c);
            } else {
                out.push_str(&path[i..i + 3].to_ascii_uppercase());
            }
            i += 3;
        } else {
            out.push(bytes[i] as char);
            i += 1;
        }
    }
    out
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// The canonical path of `target` according to the WHATWG URL parser (dot segments in all
/// their spellings), then RFC 3986 §6.2.2.2 decoding and merged slashes. Merging slashes before
/// or after removing dot segments can give different paths (`/a//..` is `/a/` or `/`); both
/// readings are returned, and the gateway may pick either.
fn resolver_paths(target: &str) -> Vec<String> {
    let (path, rest) = match target.find('?') {
        Some(i) => target.split_at(i),
        None => (target, ""),
    };
    let mut out = Vec::new();
    for spelled in [path.to_string(), merge_slashes(path)] {
        let url = url::Url::parse(&format!("http://h.example{spelled}{rest}"))
            .unwrap_or_else(|e| panic!("the WHATWG parser rejects {target:?}: {e}"));
        let canonical = merge_slashes(&decode_unreserved(url.path()));
        if !out.contains(&canonical) {
            out.push(canonical);
        }
    }
    out
}

/// The pieces generated targets are made of, with their weights.
const PIECES: &[(u32, &str)] = &[
    (8, "/"),
    (2, "//"),
    (3, "."),
    (4, ".."),
    (2, "%2e"),
    (2, "%2E"),
    (2, "%2e%2e"),
    (1, ".%2E"),
    (3, "/.."),
    (1, "/%2e%2e/"),
    (4, "admin"),
    (1, "ADMIN"),
    (1, "Admin"),
    (2, "%61dmin"),
    (1, "a%64min"),
    (3, "app"),
    (1, "%41pp"),
    (3, "static"),
    (3, "x"),
    (1, "%7e"),
    (1, "%3a"),
    (1, "%25"),
    (1, "%2f"),
    (1, "%2F"),
    (1, "%5c"),
    (1, "\\"),
    (1, ";"),
    (1, "%3b"),
    (1, "%00"),
    (1, "%252e"),
    (1, "%25%32%65"),
    (1, "%25%32%46"),
    (1, "%25%35%63"),
    (1, "%25%30%30"),
    (1, "%"),
    (2, "?"),
    (1, "q=1"),
    (1, "&"),
];

fn target_strategy() -> impl Strategy<Value = String> {
    let piece = Union::new_weighted(
        PIECES
            .iter()
            .map(|(weight, piece)| (*weight, Just(*piece).boxed()))
            .collect(),
    );
    proptest::collection::vec(piece, 1..12).prop_map(|pieces| format!("/{}", pieces.concat()))
}

/// An answer of the property gateway.
enum Answer {
    /// Refused with the gateway's envelope: status and code.
    Refused(u16, String),
    /// Forwarded: what the upstream received.
    Forwarded(Recorded),
}

/// Checks one answer of the property gateway against the rules and the resolver: `Ok(true)`
/// when it was forwarded, `Ok(false)` when it was (rightly) refused.
fn check_target(target: &str, reply: Result<Reply, String>) -> Result<bool, String> {
    let reply = reply.map_err(|why| format!("no answer: {why}"))?;
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let answer = match (Recorded::of(&reply), reply.envelope_code()) {
        (Some(recorded), _) => Answer::Forwarded(recorded),
        (None, Some(code)) => Answer::Refused(reply.status, code),
        (None, None) => {
            return Err(format!(
                "neither forwarded nor refused with the envelope: {} {:?}",
                reply.status,
                reply.text()
            ));
        }
    };
    // Checked on the raw path and on its RFC 3986 §6.2.2.2 equivalent: `%25%32%65` is `%252e`.
    let reason = refusal_reason(path).or_else(|| refusal_reason(&decode_unreserved(path)));
    if let Some(reason) = reason {
        return match answer {
            Answer::Refused(400, _) => Ok(false),
            Answer::Refused(status, code) => {
                Err(format!("{reason}: must be 400, got {status} {code}"))
            }
            Answer::Forwarded(recorded) => Err(format!(
                "{reason}: must be 400, but {:?} received {:?}",
                recorded.upstream, recorded.line
            )),
        };
    }
    let readings = resolver_paths(target);
    // A reading whose route changes when letter case is ignored, or when a Windows upstream
    // drops the trailing dots and spaces of segments, must be refused.
    let acceptable: Vec<&String> = readings
        .iter()
        .filter(|p| {
            route_of(p) == route_of(&p.to_ascii_lowercase())
                && route_of(p) == route_of(&windows_reading(p).to_ascii_lowercase())
        })
        .collect();
    let recorded = match answer {
        Answer::Refused(400, _) if acceptable.len() < readings.len() => return Ok(false),
        Answer::Refused(status, code) => {
            return Err(format!(
                "refused with {status} {code}, but the rules accept it (the resolver reads it \
                 as {readings:?})"
            ));
        }
        Answer::Forwarded(recorded) => recorded,
    };
    if acceptable.is_empty() {
        return Err(format!(
            "forwarded to {:?} as {:?}, but its route changes when case is ignored ({readings:?})",
            recorded.upstream, recorded.line
        ));
    }
    let received = recorded.target();
    let (received_path, received_query) = match received.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (received, None),
    };
    if !recorded.line.starts_with("GET /") || !recorded.line.ends_with(" HTTP/1.1") {
        return Err(format!(
            "the upstream received {:?}: not an origin-form GET",
            recorded.line
        ));
    }
    if received_query != query {
        return Err(format!(
            "the query must be forwarded byte for byte: sent {query:?}, received {received_query:?}"
        ));
    }
    let leftover = received_path.contains("//")
        || received_path
            .split('/')
            .any(|s| s == "." || s == ".." || s.eq_ignore_ascii_case("%2e"))
        || received_path.to_ascii_lowercase().contains("%2e");
    if leftover {
        return Err(format!(
            "the upstream received {received_path:?}, which is not canonical"
        ));
    }
    let Some(reading) = acceptable.iter().find(|p| p.as_str() == received_path) else {
        return Err(format!(
            "the upstream received {received_path:?}; the resolver reads the target as {readings:?}"
        ));
    };
    let route = route_of(reading);
    let expected_upstream = route_name(route);
    if recorded.upstream != expected_upstream {
        return Err(format!(
            "routed to {:?}, but {reading:?} is under the {route:?} route",
            recorded.upstream
        ));
    }
    Ok(true)
}

/// How IIS reads a path: trailing dots and spaces of each segment dropped, then slashes
/// merged (`/admin./x` is `/admin/x`).
fn windows_reading(path: &str) -> String {
    let segments: Vec<&str> = path
        .split('/')
        .map(|segment| {
            let mut s = segment;
            while let Some(rest) = s.strip_suffix('.').or_else(|| s.strip_suffix("%20")) {
                s = rest;
            }
            s
        })
        .collect();
    merge_slashes(&segments.join("/"))
}

fn route_name(prefix: &str) -> &'static str {
    match prefix {
        "/static" => "static",
        "/admin" => "admin",
        "/app" => "app",
        _ => "root",
    }
}

#[test]
fn the_gateway_routes_every_generated_target_where_an_independent_resolver_does() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("test runtime");
    let upstreams: Vec<(&str, RecordingUpstream)> = rt.block_on(async {
        let mut out = Vec::new();
        for prefix in PROPERTY_ROUTES {
            let name = route_name(prefix);
            out.push((*prefix, RecordingUpstream::start(name).await));
        }
        out
    });
    let routes: String = upstreams
        .iter()
        .map(|(prefix, up)| route_toml(route_name(prefix), "", prefix, &up.url(), "public"))
        .collect();
    let scratch = Scratch::new();
    let gw = start_gateway(parse_config(&test_config_text(scratch.dir.path(), &routes)));
    let addr = gw.addr;

    let forwarded = Cell::new(0usize);
    let refused = Cell::new(0usize);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    // One target in four is sent in absolute-form (with a Host that repeats its authority):
    // its path must be resolved exactly like the origin-form one.
    let strategy = (target_strategy(), proptest::bool::weighted(0.25));
    let result = runner.run(&strategy, |(target, absolute)| {
        let sent = if absolute {
            request(
                "GET",
                &format!("http://h.example{target}"),
                "HTTP/1.1",
                &["h.example"],
            )
        } else {
            request("GET", &target, "HTTP/1.1", &["h.example"])
        };
        let reply = rt.block_on(exchange(addr, &sent));
        match check_target(&target, reply) {
            Ok(true) => forwarded.set(forwarded.get() + 1),
            Ok(false) => refused.set(refused.get() + 1),
            Err(why) => {
                return Err(TestCaseError::fail(format!(
                    "{}\n      {why}",
                    describe_request(&sent)
                )));
            }
        }
        Ok(())
    });
    println!(
        "canonical property: {} targets sent ({} forwarded, {} refused)",
        forwarded.get() + refused.get(),
        forwarded.get(),
        refused.get()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    drop(gw);
}
