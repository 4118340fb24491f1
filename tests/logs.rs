//! What the log files hold: no query string and no token at any level, one access-log line
//! per request, and repeated warnings throttled with a count.
//!
//! A test binary of its own: it installs the process-wide log subscriber (at debug level, to
//! stdout as well) and the panic hook that keeps panic messages out of the logs, which would
//! otherwise hold for every test sharing its process and hide their failure messages. The
//! subscriber can be installed once per process, so the stories run in one test, in turn.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::app::{Backend, TestApp};
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_log_files_keep_secrets_out_log_each_request_and_throttle_repeats() {
    let scratch = Scratch::new();
    let logs = scratch.path("logs");
    let mut logging = parse_config(&test_config_text(scratch.dir.path(), "")).logging;
    logging.dir = logs.display().to_string();
    logging.level = "debug".into();
    let guards = portcullis::telemetry::init(&logging).expect("logging starts");

    proxied_query_strings_never_reach_the_logs_even_at_debug_level(&logs).await;
    each_request_gets_one_access_line_with_no_query_email_or_token(&logs).await;
    repeated_warnings_are_throttled_with_a_count_and_security_lines_are_kept(&logs).await;
    route_condition_refusals_are_in_the_security_log(&logs).await;
    pingoras_normal_reuse_failure_is_not_an_error(&logs).await;
    drop(guards);
}

/// The lines of a log file, parsed.
fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect()
}

/// Waits (10 s at most) until a line of `file` satisfies `found`, and returns it.
async fn wait_for(path: &Path, found: impl Fn(&Value) -> bool) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(line) = lines(path).into_iter().find(&found) {
            return Some(line);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn proxied_query_strings_never_reach_the_logs_even_at_debug_level(logs: &Path) {
    let upstream = EchoUpstream::start().await;
    let scratch = Scratch::new();
    let route = format!(
        "[[routes]]\nname = \"pub\"\npath_prefix = \"/pub\"\nupstream = \"{}\"\npolicy = \"public\"\n",
        upstream.url()
    );
    let gw = start_gateway(parse_config(&test_config_text(scratch.dir.path(), &route)));

    let r = client()
        .get(format!("{}/pub/page?token=QUERYSECRET", gw.url()))
        .bearer_auth("BEARERSECRET")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let access = wait_for(&logs.join("access.log"), |l| l["path"] == "/pub/page").await;
    let access = access.expect("an access line for /pub/page");
    assert_eq!(access["route"], "pub");
    assert_eq!(access["status"], 200);
    assert_eq!(access["method"], "GET");
    assert_eq!(
        access["upstream"],
        upstream.url().trim_start_matches("http://")
    );
    drop(gw);

    let combined = std::fs::read_to_string(logs.join("combined.log")).expect("combined.log");
    assert!(
        combined.contains("\"level\":\"DEBUG\""),
        "debug lines are written"
    );
    for file in ["combined.log", "access.log", "error.log", "security.log"] {
        let text = std::fs::read_to_string(logs.join(file)).unwrap_or_default();
        for secret in ["QUERYSECRET", "BEARERSECRET"] {
            assert!(!text.contains(secret), "{secret} logged in {file}:\n{text}");
        }
    }
}

/// Every refusal by a route's conditions is a security line with its reason, never the query.
async fn route_condition_refusals_are_in_the_security_log(logs: &Path) {
    let upstream = EchoUpstream::start().await;
    let scratch = Scratch::new();
    let route = format!(
        "[[routes]]\nname = \"lan\"\npath_prefix = \"/lan\"\nupstream = \"{}\"\n\
         policy = \"public\"\nmethods = [\"GET\"]\nnetworks = [\"10.0.0.0/8\"]\n",
        upstream.url()
    );
    let gw = start_gateway(parse_config(&test_config_text(scratch.dir.path(), &route)));
    for (method, reason) in [
        (reqwest::Method::GET, "forbidden_network"),
        (reqwest::Method::POST, "method_not_allowed"),
    ] {
        let r = client()
            .request(
                method.clone(),
                format!("{}/lan/x?token=QUERYSECRET", gw.url()),
            )
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{method}");
        let line = wait_for(&logs.join("security.log"), |l| {
            l["event"] == "route_condition_unmet" && l["reason"] == reason
        })
        .await
        .unwrap_or_else(|| panic!("no security line for {reason}"));
        assert_eq!(line["route"], "lan", "{line}");
        assert_eq!(line["method"], method.as_str(), "{line}");
        assert_eq!(line["client"], "127.0.0.1", "{line}");
    }
    drop(gw);
    let text = std::fs::read_to_string(logs.join("security.log")).unwrap();
    assert!(!text.contains("QUERYSECRET"), "{text}");
}

async fn each_request_gets_one_access_line_with_no_query_email_or_token(logs: &Path) {
    let upstream = EchoUpstream::start().await;
    let routes = format!(
        "[[routes]]\nname = \"app\"\npath_prefix = \"/app\"\nupstream = \"{}\"\n\
         policy = \"authenticated\"\nrequire_verified_email = false\n",
        upstream.url()
    );
    let app = TestApp::spawn(Backend::Embedded, &routes).await;
    let email = "access-log@example.com";
    let r = app.register(email).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let tokens = app.login(email).await;
    let user_id = r.body["data"]["user"]["id"].as_str().unwrap().to_string();

    let cases: &[(&str, Option<&str>, u16, &str)] = &[
        ("/app/signed-in?q=ONE", Some(&tokens.access), 200, "app"),
        ("/app/anonymous?q=TWO", None, 401, "app"),
        ("/nowhere/x?q=THREE", None, 404, "unmatched"),
        ("/health?q=FOUR", None, 200, "local"),
    ];
    for (target, token, status, route) in cases {
        let mut request = app.http.get(app.url(target));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        assert_eq!(request.send().await.unwrap().status(), *status, "{target}");
        let path = target.split('?').next().unwrap();
        let line = wait_for(&logs.join("access.log"), |l| l["path"] == path).await;
        let line = line.unwrap_or_else(|| panic!("no access line for {path}"));
        assert_eq!(line["status"], *status, "{line}");
        assert_eq!(line["route"], *route, "{line}");
        assert_eq!(line["client"], "127.0.0.1", "{line}");
        assert!(line["duration_ms"].as_f64().is_some(), "{line}");
        assert!(line["bytes"].as_u64().is_some(), "{line}");
        let expected_user = if token.is_some() {
            user_id.as_str()
        } else {
            ""
        };
        assert_eq!(line["user_id"], expected_user, "{line}");
    }
    let text = std::fs::read_to_string(logs.join("access.log")).unwrap();
    for secret in [email, tokens.access.as_str(), "q=ONE", "q=TWO", "q=FOUR"] {
        assert!(!text.contains(secret), "{secret} in access.log");
    }
}

async fn repeated_warnings_are_throttled_with_a_count_and_security_lines_are_kept(logs: &Path) {
    for _ in 0..50 {
        tracing::warn!(probe = "throttle", "the same warning again");
        tracing::warn!(target: "security", probe = "kept", "a security event");
    }
    let report = wait_for(&logs.join("combined.log"), |l| {
        l["message"] == "repeated log lines suppressed"
            && l["of_site"].as_str().is_some_and(|s| s.contains("logs.rs"))
    })
    .await
    .expect("a line counting what was suppressed");
    let burst = portcullis::telemetry::throttle::BURST;
    assert_eq!(report["suppressed"], 50 - u64::from(burst), "{report}");
    let combined = lines(&logs.join("combined.log"));
    let written = combined.iter().filter(|l| l["probe"] == "throttle").count();
    assert_eq!(written, burst as usize);
    let security = lines(&logs.join("security.log"));
    assert_eq!(security.iter().filter(|l| l["probe"] == "kept").count(), 50);
}

async fn pingoras_normal_reuse_failure_is_not_an_error(logs: &Path) {
    // Pingora writes through the `log` crate; the bridge turns it into this event.
    log::error!(target: "pingora_core::connectors", "failed to acquire reusable stream");
    // A client's garbage on a listener: Pingora's line quotes the raw request.
    log::error!(
        target: "pingora_core::apps::http_app",
        "HTTP server fails to read from downstream: InvalidHTTPHeader buf: GET / HTTP/9.9 Cookie: portcullis=RAWCOOKIESECRET"
    );
    log::error!(
        target: "pingora_core::apps::http_app",
        "HTTP server fails to write to downstream: ConnectionClosed"
    );
    // A client's TLS hello naming an IP address as its server name: rustls warns per
    // connection, so anyone could fill the logs.
    log::warn!(
        target: "rustls::server::hs",
        "Illegal SNI extension: ignoring IP address presented as hostname (3132372e302e302e31)"
    );
    log::warn!(target: "rustls::server::hs", "a real TLS warning");
    log::error!(target: "pingora_core::connectors", "a real connector error");
    let error = wait_for(&logs.join("error.log"), |l| {
        l["message"] == "a real connector error"
    })
    .await;
    assert!(error.is_some(), "other errors are still written");
    let text = std::fs::read_to_string(logs.join("error.log")).unwrap();
    let combined = std::fs::read_to_string(logs.join("combined.log")).unwrap();
    assert!(combined.contains("a real TLS warning"), "{combined}");
    for noise in [
        "reusable stream",
        "RAWCOOKIESECRET",
        "fails to write",
        "Illegal SNI",
    ] {
        assert!(!text.contains(noise), "{noise}: {text}");
        let combined = std::fs::read_to_string(logs.join("combined.log")).unwrap();
        assert!(!combined.contains(noise), "{noise} in combined.log");
    }
}
