//! Route rules over real connections: wildcard hosts (and what they must not match), methods
//! (405 with `Allow`), client networks through trusted and untrusted proxies, accounts by id
//! and address, address domains, any-of and all-of roles; and `check-config`'s table and
//! warnings.

use crate::support::app::*;
use crate::support::{EchoUpstream, Scratch, echoed_header, test_config_text};
use portcullis::config::UserEntry;
use reqwest::StatusCode;
use serde_json::Value;

/// One request and what must come of it.
struct Case {
    host: &'static str,
    method: &'static str,
    path: &'static str,
    forwarded_for: Option<&'static str>,
    status: StatusCode,
    code: Option<&'static str>,
}

const fn case(host: &'static str, path: &'static str, status: u16) -> Case {
    Case {
        host,
        method: "GET",
        path,
        forwarded_for: None,
        status: match StatusCode::from_u16(status) {
            Ok(status) => status,
            Err(_) => StatusCode::IM_A_TEAPOT,
        },
        code: None,
    }
}

impl Case {
    const fn method(mut self, method: &'static str) -> Self {
        self.method = method;
        self
    }
    const fn from(mut self, address: &'static str) -> Self {
        self.forwarded_for = Some(address);
        self
    }
    const fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
}

/// Sends `case` to the gateway (as `token`, when given); the status, headers and body.
async fn send(
    app: &TestApp,
    case: &Case,
    token: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = app
        .http
        .request(case.method.parse().unwrap(), app.url(case.path))
        .header(reqwest::header::HOST, case.host);
    if let Some(address) = case.forwarded_for {
        request = request.header("x-forwarded-for", address);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let r = request.send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

async fn check(app: &TestApp, cases: &[Case], token: Option<&str>, label: &str) {
    for c in cases {
        let (status, _, body) = send(app, c, token).await;
        let what = format!(
            "{label}: {} {} {} from {:?}",
            c.method, c.host, c.path, c.forwarded_for
        );
        assert_eq!(status, c.status, "{what}: {body}");
        if let Some(code) = c.code {
            assert_eq!(body["code"], code, "{what}: {body}");
        }
    }
}

fn route(name: &str, host: &str, prefix: &str, upstream: &str, rest: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\nhost = \"{host}\"\npath_prefix = \"{prefix}\"\n\
         upstream = \"{upstream}\"\n{rest}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_choose_routes_exact_then_longest_wildcard_then_any() {
    let up = EchoUpstream::start().await;
    let u = up.url();
    let routes = [
        route("exact", "app.example.com", "/", &u, "policy = \"public\""),
        route("wild", "*.example.com", "/", &u, "policy = \"deny\""),
        route(
            "deeper",
            "*.a.example.com",
            "/",
            &u,
            "policy = \"public\"\nmethods = [\"POST\"]",
        ),
        route("any", "", "/", &u, ""),
    ]
    .concat();
    let app = TestApp::spawn(Backend::Embedded, &routes).await;
    let cases = [
        case("app.example.com", "/x", 200),
        case("APP.Example.COM.", "/x", 200),
        case("app.example.com:8080", "/x", 200),
        case("x.example.com", "/x", 403).code("forbidden"),
        case("x.y.example.com", "/x", 403).code("forbidden"),
        // The apex of `*.a.example.com` is a label under `*.example.com`.
        case("a.example.com", "/x", 403).code("forbidden"),
        case("b.a.example.com", "/x", 405).code("method_not_allowed"),
        case("B.A.Example.com.", "/x", 405),
        case("c.b.a.example.com:443", "/x", 405),
        case("b.a.example.com", "/x", 200).method("POST"),
        // Never the apex, a look-alike suffix or a name that merely starts the same.
        case("example.com", "/x", 401).code("authentication_required"),
        case("example.com.evil.test", "/x", 401),
        case("xexample.com", "/x", 401),
        case("a.example.com.evil.test", "/x", 401),
        case("example.co", "/x", 401),
    ];
    check(&app, &cases, None, "hosts").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn methods_are_refused_with_405_and_allow_and_head_is_not_get() {
    let up = EchoUpstream::start().await;
    let u = up.url();
    let routes = [
        route(
            "read",
            "",
            "/read",
            &u,
            "policy = \"public\"\nmethods = [\"GET\"]",
        ),
        route(
            "both",
            "",
            "/both",
            &u,
            "policy = \"public\"\nmethods = [\"GET\", \"HEAD\", \"PROPFIND\"]",
        ),
        route(
            "nothing",
            "",
            "/nothing",
            &u,
            "policy = \"public\"\nmethods = []",
        ),
    ]
    .concat();
    let app = TestApp::spawn(Backend::Embedded, &routes).await;
    let h = "127.0.0.1";
    let cases = [
        case(h, "/read/x", 200),
        case(h, "/read/x", 405).method("HEAD"),
        case(h, "/read/x", 405)
            .method("POST")
            .code("method_not_allowed"),
        case(h, "/read/x", 405).method("OPTIONS"),
        case(h, "/read/x", 405).method("get"),
        case(h, "/both/x", 200).method("HEAD"),
        case(h, "/both/x", 200).method("PROPFIND"),
        case(h, "/both/x", 405).method("DELETE"),
        case(h, "/nothing", 405),
    ];
    check(&app, &cases, None, "methods").await;
    let (_, headers, _) = send(&app, &case(h, "/read", 405).method("POST"), None).await;
    assert_eq!(headers["allow"], "GET");
    let (_, headers, _) = send(&app, &case(h, "/both", 405).method("PUT"), None).await;
    assert_eq!(headers["allow"], "GET, HEAD, PROPFIND");
}

fn network_routes(upstream: &str) -> String {
    [
        route(
            "lan",
            "",
            "/lan",
            upstream,
            "policy = \"public\"\nnetworks = [\"10.0.0.0/8\", \"2001:db8::/32\"]",
        ),
        route(
            "mapped",
            "",
            "/mapped",
            upstream,
            "policy = \"public\"\nnetworks = [\"::ffff:192.0.2.0/120\"]",
        ),
        route(
            "local",
            "",
            "/local",
            upstream,
            "policy = \"public\"\nnetworks = [\"127.0.0.1\"]",
        ),
    ]
    .concat()
}

#[tokio::test(flavor = "multi_thread")]
async fn networks_read_the_client_after_trusted_proxies_only() {
    let up = EchoUpstream::start().await;
    let behind = TestApp::spawn_with(Backend::Embedded, &network_routes(&up.url()), |c| {
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let h = "127.0.0.1";
    let cases = [
        case(h, "/lan", 200).from("10.1.2.3"),
        case(h, "/lan", 200).from("198.51.100.1, 10.255.0.1"),
        case(h, "/lan", 200).from("2001:db8::5"),
        case(h, "/lan", 200).from("[2001:db8:1::9]:443"),
        case(h, "/lan", 200).from("::ffff:10.1.2.3"),
        case(h, "/lan", 403)
            .from("10.1.2.3, 192.0.2.1")
            .code("forbidden_network"),
        case(h, "/lan", 403).from("2001:db9::1"),
        case(h, "/lan", 403).from("11.0.0.1"),
        case(h, "/lan", 403),
        case(h, "/mapped", 200).from("192.0.2.44"),
        case(h, "/mapped", 200).from("::ffff:192.0.2.44"),
        case(h, "/mapped", 403).from("192.0.3.1"),
        case(h, "/local", 200),
        case(h, "/local", 403).from("10.1.2.3"),
    ];
    check(&behind, &cases, None, "trusted proxy").await;

    // The same requests from a peer that is no trusted proxy: its X-Forwarded-For is its own
    // claim, and the client is the peer.
    let direct = TestApp::spawn(Backend::Embedded, &network_routes(&up.url())).await;
    let cases = [
        case(h, "/lan", 403)
            .from("10.1.2.3")
            .code("forbidden_network"),
        case(h, "/lan", 403).from("2001:db8::5"),
        case(h, "/mapped", 403).from("192.0.2.44"),
        case(h, "/local", 200).from("10.1.2.3"),
        case(h, "/local", 200),
    ];
    check(&direct, &cases, None, "untrusted peer").await;
}

/// The account named `email`'s id, from the store.
async fn user_id(app: &TestApp, email: &str) -> String {
    let store = app.store().await;
    let user = store
        .find_by_email(&email.parse().unwrap())
        .await
        .unwrap()
        .expect("the account");
    user.id.to_string()
}

fn identity_routes(upstream: &str, bob: &str) -> String {
    let u = upstream;
    [
        route(
            "by-email",
            "",
            "/by-email",
            u,
            "emails = [\"Alice@Example.com\"]",
        ),
        route("by-id", "", "/by-id", u, &format!("users = [\"{bob}\"]")),
        route(
            "either",
            "",
            "/either",
            u,
            &format!("users = [\"{bob}\"]\nemails = [\"carol@corp.example\"]"),
        ),
        route(
            "domains",
            "",
            "/domains",
            u,
            "email_domains = [\"*.corp.example\", \"example.com\"]",
        ),
        route("any-role", "", "/any-role", u, "roles = [\"ops\", \"dev\"]"),
        route(
            "all-roles",
            "",
            "/all-roles",
            u,
            "all_roles = [\"ops\", \"dev\"]",
        ),
        route(
            "mixed",
            "",
            "/mixed",
            u,
            "roles = [\"ops\"]\nemail_domains = [\"example.com\"]",
        ),
    ]
    .concat()
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_domains_and_roles_within_any_across_all() {
    for backend in backends() {
        let up = EchoUpstream::start().await;
        // Accounts first (their ids go into the routes), then a gateway on the same stores.
        let first = TestApp::spawn(backend, "").await;
        for email in [
            "alice@example.com",
            "bob@sub.corp.example",
            "carol@corp.example",
        ] {
            first.verified_user(email).await;
        }
        first.grant_role("alice@example.com", "ops").await;
        first.grant_role("bob@sub.corp.example", "ops").await;
        first.grant_role("bob@sub.corp.example", "dev").await;
        let bob = user_id(&first, "bob@sub.corp.example").await;
        let routes = identity_routes(&up.url(), &bob);
        let app = TestApp::spawn_with(backend, &routes, |c| {
            c.storage = first.gw.app.config.storage.clone();
            c.sessions = first.gw.app.config.sessions.clone();
            c.tokens = first.gw.app.config.tokens.clone();
            c.two_factor = first.gw.app.config.two_factor.clone();
        })
        .await;
        let h = "127.0.0.1";
        let table: [(&str, [u16; 7]); 3] = [
            //             by-email by-id either domains any all mixed
            ("alice@example.com", [200, 403, 403, 200, 200, 403, 200]),
            ("bob@sub.corp.example", [403, 200, 200, 200, 200, 200, 403]),
            ("carol@corp.example", [403, 403, 200, 403, 403, 403, 403]),
        ];
        let paths = [
            "/by-email",
            "/by-id",
            "/either",
            "/domains",
            "/any-role",
            "/all-roles",
            "/mixed",
        ];
        for (email, expected) in table {
            let token = app.login(email).await.access;
            for (path, status) in paths.iter().zip(expected) {
                let c = case(h, path, status);
                let (got, _, body) = send(&app, &c, Some(&token)).await;
                assert_eq!(got.as_u16(), status, "{backend:?} {email} {path}: {body}");
                if status == 200 {
                    assert_eq!(echoed_header(&body, "x-user-email"), [email]);
                } else {
                    let code = body["code"].as_str().unwrap_or_default();
                    assert!(
                        ["forbidden_user", "forbidden_email_domain", "forbidden_role"]
                            .contains(&code),
                        "{email} {path}: {body}"
                    );
                }
            }
        }
        // Each kind is refused with its own code.
        let carol = app.login("carol@corp.example").await.access;
        for (path, code) in [
            ("/by-email", "forbidden_user"),
            ("/domains", "forbidden_email_domain"),
            ("/all-roles", "forbidden_role"),
        ] {
            let (_, _, body) = send(&app, &case(h, path, 403), Some(&carol)).await;
            assert_eq!(body["code"], code, "{path}");
        }
        // Anonymous: asked to sign in, as on any route that needs an account.
        let (status, _, _) = send(&app, &case(h, "/by-id", 401), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        crate::support::metrics_containing(
            &app.gw.admin_url(),
            &["portcullis_auth_decisions_total{outcome=\"denied\",reason=\"forbidden_user\",route=\"by-email\"}"],
        )
        .await;
    }
}

#[test]
fn an_account_id_is_a_uuid() {
    assert!(UserEntry::try_from("not-an-id".to_owned()).is_err());
}

fn check_config(extra: &str) -> (i32, String, String) {
    let scratch = Scratch::new();
    let path = scratch.path("portcullis.toml");
    std::fs::write(&path, test_config_text(scratch.dir.path(), extra)).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
    for (key, _) in std::env::vars() {
        if key.starts_with("PORTCULLIS_") {
            command.env_remove(key);
        }
    }
    let out = command
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_prints_the_table_and_warns_about_shadows_and_dead_routes() {
    let u = "http://127.0.0.1:9";
    let routes = [
        route("admin-everywhere", "", "/admin", u, "policy = \"deny\""),
        route(
            "app",
            "app.example.com",
            "/",
            u,
            "roles = [\"ops\", \"dev\"]",
        ),
        route("nobody", "", "/nobody", u, "networks = []"),
        route(
            "tenants",
            "*.example.com",
            "/",
            u,
            "methods = [\"GET\", \"HEAD\"]\nnetworks = [\"10.0.0.0/8\"]\nall_roles = [\"staff\"]",
        ),
    ]
    .concat();
    let (code, out, err) = check_config(&routes);
    assert_eq!(code, 0, "{out}{err}");
    let table: Vec<&str> = out.lines().filter(|l| l.starts_with("  ")).collect();
    assert_eq!(table.len(), 4, "{out}");
    assert!(
        table[0].contains("app: host app.example.com path /"),
        "{out}"
    );
    assert!(
        table[1]
            .contains("tenants: host *.example.com path / methods GET,HEAD networks 10.0.0.0/8"),
        "{out}"
    );
    assert!(table[1].contains("all of roles [staff]"), "{out}");
    assert!(
        table[2].contains("nobody: host any host path /nobody methods any networks none"),
        "{out}"
    );
    assert!(
        table[3].contains("admin-everywhere") && table[3].contains("nobody"),
        "{out}"
    );
    for needle in [
        "roles = [\"ops\", \"dev\"] lets in an account holding any of these; use all_roles to require all",
        "routes[2] (\"nobody\") can never let a request through: networks given as an empty list",
        "routes[0] (\"admin-everywhere\") (any host, /admin) does not apply to app.example.com: routes[1] (\"app\")",
        "routes[0] (\"admin-everywhere\") (any host, /admin) does not apply to *.example.com: routes[3] (\"tenants\")",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in {err}");
    }
}

#[test]
fn check_config_refuses_rules_that_cannot_be_read() {
    let u = "http://127.0.0.1:9";
    for (rest, host, key) in [
        ("methods = [\"get\"]", "", "methods"),
        (
            "methods = [\"GET\", \"TRACE\"]",
            "",
            "never reaches a route",
        ),
        ("methods = [\"TRACK\"]", "", "never reaches a route"),
        ("networks = [\"10.0.0.1/8\"]", "", "networks"),
        ("networks = [\"ten\"]", "", "networks"),
        ("users = [\"bob\"]", "", "users"),
        ("emails = [\"not an address\"]", "", "emails"),
        ("email_domains = [\"com\"]", "", "email_domains"),
        (
            "policy = \"public\"\nemails = [\"a@example.com\"]",
            "",
            "emails",
        ),
        (
            "policy = \"public\"\nall_roles = [\"ops\"]",
            "",
            "all_roles",
        ),
        ("", "*.*.example.com", "host"),
        ("", "app.*.example.com", "host"),
        ("", "*example.com", "host"),
        ("", "*.10.0.0.1", "host"),
        ("", "app.example.com:8080", "host"),
        ("max_auth_age = \"0s\"", "", "max_auth_age"),
        ("max_auth_age = \"500ms\"", "", "max_auth_age"),
        (
            "policy = \"public\"\nmax_auth_age = \"10m\"",
            "",
            "max_auth_age",
        ),
        (
            "policy = \"deny\"\nmax_auth_age = \"10m\"",
            "",
            "max_auth_age",
        ),
    ] {
        let (code, out, err) = check_config(&route("r", host, "/r", u, rest));
        assert_eq!(code, 2, "{rest} {host}: {out}{err}");
        assert!(err.contains(key), "{rest} {host}: {err}");
    }
    // Identical host and path, spelt differently (the host's case and dot, the prefix's
    // final slash or letter case): refused.
    for (first, second) in [
        (("App.Example.com.", "/x"), ("app.example.com", "/x/")),
        (("", "/Secret"), ("", "/secret")),
        (("*.example.com", "/Admin/"), ("*.Example.com", "/aDMIN")),
    ] {
        let twice = [
            route("a", first.0, first.1, u, ""),
            route("b", second.0, second.1, u, "policy = \"deny\""),
        ]
        .concat();
        let (code, _, err) = check_config(&twice);
        assert_eq!(code, 2, "{first:?} {second:?}: {err}");
        assert!(err.contains("already routed"), "{err}");
    }
}

#[test]
fn check_config_shows_how_recent_a_sign_in_each_route_needs() {
    let u = "http://127.0.0.1:9";
    let routes = [
        route("billing", "", "/billing", u, "max_auth_age = \"10m\""),
        route(
            "vault",
            "",
            "/vault",
            u,
            "policy = \"two_factor\"\nmax_auth_age = \"30s\"",
        ),
        route("plain", "", "/plain", u, ""),
    ]
    .concat();
    let (code, out, err) = check_config(&routes);
    assert_eq!(code, 0, "{out}{err}");
    let line = |name: &str| {
        let line = out.lines().find(|l| l.trim_start().starts_with(name));
        line.unwrap_or_else(|| panic!("no {name} in {out}"))
            .to_owned()
    };
    assert!(line("billing:").contains("signed in within 10m"), "{out}");
    assert!(line("vault:").contains("signed in within 30s"), "{out}");
    assert!(!line("plain:").contains("signed in within"), "{out}");
}
