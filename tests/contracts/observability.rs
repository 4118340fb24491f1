//! The metrics contract: a real scrape passes `promtool check metrics`, and the Grafana
//! dashboard (`deploy/grafana/portcullis.json`) queries only metric names the gateway exports,
//! in expressions Prometheus can parse.
//!
//! `promtool` comes with Debian's `prometheus` package. Without it the promtool checks are
//! skipped, except under `CI=true`, where they fail.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::app::{Backend, PASSWORD, TestApp, backends};
use crate::support::{EchoUpstream, free_port, metrics_containing};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const DASHBOARD: &str = include_str!("../../deploy/grafana/portcullis.json");

/// `promtool`, or `None` (after saying so) when it is absent outside CI.
fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some("promtool");
    }
    if crate::support::in_ci() {
        panic!("promtool is not installed (apt-get install prometheus); CI=true requires it");
    }
    eprintln!("skipping: promtool is not installed (apt-get install prometheus)");
    None
}

/// Runs promtool with `args`, feeding `stdin`; panics with its output unless it succeeds.
fn run_promtool(promtool: &str, args: &[&str], stdin: &str) {
    let mut child = Command::new(promtool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A gateway after traffic that makes every labelled series appear: logins of each kind,
/// a lockout, proxied requests allowed and denied, an upstream failure, a rate-limit
/// refusal and mail. Returns the admin `/metrics` text.
async fn exercised_scrape() -> String {
    let echo = EchoUpstream::start().await;
    let extra = format!(
        r#"
[lockout]
max_failed_attempts = 2

[[routes]]
name = "app"
path_prefix = "/app"
upstream = "{}"
policy = "authenticated"

[[routes]]
name = "down"
path_prefix = "/down"
upstream = "http://127.0.0.1:{}"
policy = "public"
"#,
        echo.url(),
        free_port()
    );
    let app = TestApp::spawn_with(Backend::Embedded, &extra, |c| {
        c.rate_limits.password_reset = Some("1/1h".parse().unwrap());
    })
    .await;

    app.verified_user("ada@example.com").await;
    let tokens = app.login("ada@example.com").await;
    let allowed = app.get_as(&tokens.access, "/app/page").await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.body);
    let denied = app.call(Method::GET, "/app/page", None, None).await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    let down = app.call(Method::GET, "/down", None, None).await;
    assert_eq!(down.status, StatusCode::BAD_GATEWAY);

    app.register("bob@example.com").await;
    for _ in 0..2 {
        let r = app
            .post(
                "/api/auth/login",
                json!({"email": "bob@example.com", "password": "Wrong-passw0rd!"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    }
    let locked = app
        .post(
            "/api/auth/login",
            json!({"email": "bob@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(locked.status, StatusCode::LOCKED, "{}", locked.body);

    for expected in [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS] {
        let r = app
            .post(
                "/api/auth/request-password-reset",
                json!({"email": "ada@example.com"}),
            )
            .await;
        assert_eq!(r.status, expected, "{}", r.body);
    }

    metrics_containing(
        &app.gw.admin_url(),
        &[
            "portcullis_logins_total{result=\"success\"}",
            "portcullis_logins_total{result=\"locked\"}",
            "portcullis_lockouts_total 1",
            "portcullis_auth_decisions_total{outcome=\"allowed\"",
            "portcullis_auth_decisions_total{outcome=\"denied\"",
            "portcullis_upstream_duration_seconds_bucket{route=\"app\"",
            "portcullis_upstream_errors_total{kind=\"connect\",route=\"down\"}",
            "portcullis_rate_limited_total{scope=\"password_reset\"} 1",
            "portcullis_http_requests_total{route=\"local\",status=\"429\"}",
            // The build and the process (the Prometheus client's collector, standard names).
            "portcullis_build_info{version=\"",
            // Present from the start, before any passkey is used.
            "portcullis_passkey_events_total{event=\"used\",reason=\"ok\"} 0",
            // Read from the stores every 30 s, and at once at start.
            "portcullis_sessions_active ",
            "portcullis_users_registered ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_cpu_seconds_total ",
            "process_start_time_seconds ",
        ],
    )
    .await
}

/// The metric names a scrape has samples for.
fn scraped_names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// Every PromQL expression in the dashboard: panel targets and template-variable queries.
fn dashboard_expressions() -> Vec<String> {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("dashboard is JSON");
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if let Some(query) = variable["query"]["query"].as_str() {
            out.push(query.to_string());
        }
    }
    assert!(out.len() > 20, "the dashboard has its panels: {out:?}");
    out
}

/// The gateway's names an expression refers to: its own (`portcullis_*`) and the
/// process collector's (`process_*`).
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("portcullis_") || word.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn scrape_passes_promtool_check_metrics() {
    let Some(promtool) = promtool() else { return };
    let scrape = exercised_scrape().await;
    run_promtool(promtool, &["check", "metrics"], &scrape);
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_queries_only_exported_metrics() {
    let scraped = scraped_names(&exercised_scrape().await);
    let mut used = BTreeSet::new();
    for expr in dashboard_expressions() {
        used.extend(metric_names(&expr));
    }
    for family in [
        "portcullis_http_requests_total",
        "portcullis_http_request_duration_seconds_bucket",
        "portcullis_upstream_duration_seconds_bucket",
        "portcullis_auth_decisions_total",
        "portcullis_logins_total",
        "portcullis_lockouts_total",
        "portcullis_rate_limited_total",
        "portcullis_sessions_active",
        "portcullis_users_registered",
        "portcullis_passkey_events_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(used.contains(family), "the dashboard shows {family}");
    }
    let missing: Vec<_> = used.difference(&scraped).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries names the gateway does not export: {missing:?}\nexported: {scraped:?}"
    );
}

#[test]
fn dashboard_expressions_parse_as_promql() {
    let Some(promtool) = promtool() else { return };
    // Grafana fills these in before Prometheus sees the query.
    let rules: Vec<Value> = dashboard_expressions()
        .iter()
        .filter(|e| !e.starts_with("label_values("))
        .enumerate()
        .map(|(i, expr)| {
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "1m")
                .replace("$__range", "1h")
                .replace("$job", ".*")
                .replace("$instance", ".*")
                .replace("$route", ".*");
            json!({"record": format!("dashboard:expr_{i}"), "expr": expr})
        })
        .collect();
    // JSON is YAML, so the rules file needs no YAML writer.
    let file = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard-rules.yml");
    std::fs::write(&path, file.to_string()).unwrap();
    run_promtool(promtool, &["check", "rules", path.to_str().unwrap()], "");
}

/// Reads the count gauges from the stores now, then waits for the scrape to show `users`
/// accounts and `sessions` live sessions.
async fn gauges_show(app: &TestApp, users: u64, sessions: u64) {
    app.gw.app.refresh_gauges().await;
    metrics_containing(
        &app.gw.admin_url(),
        &[
            &format!("\nportcullis_users_registered {users}\n"),
            &format!("\nportcullis_sessions_active {sessions}\n"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gauges_count_accounts_and_live_sessions_on_every_backend() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        gauges_show(&app, 0, 0).await;

        app.verified_user("ada@example.com").await;
        app.register("bob@example.com").await;
        let first = app.login("ada@example.com").await;
        app.login("ada@example.com").await;
        gauges_show(&app, 2, 2).await;

        let out = app
            .post_as(&first.access, "/api/auth/logout", json!({}))
            .await;
        assert_eq!(out.status, StatusCode::OK, "{backend:?}: {}", out.body);
        gauges_show(&app, 2, 1).await;
    }
}
